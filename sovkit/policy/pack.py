"""The policy pack: shipped Rego modules and data, plus an operator's own (``--policies DIR``).

Operator modules must declare a package under ``sovkit.custom.`` (so they add
rules, never replace shipped ones); their ``data.json`` files are deep-merged
over the shipped data (objects merge, other values replace). The pack digest
binds saved plans and attestations to exactly the modules and data evaluated.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sovkit import __version__
from sovkit.errors import PolicyBundleInvalid, PolicyError
from sovkit.policy.bundle_signing import SIGNATURES_FILE, sign_files, verify_files
from sovkit.resources import policies_dir
from sovkit.signing.canonical import canonical_json
from sovkit.signing.keys import PublicKey, Signer

_PACKAGE_RE = re.compile(r"^\s*package\s+([A-Za-z_][\w.]*)\s*$", re.MULTILINE)
CUSTOM_PREFIX = "sovkit.custom."


@dataclass(frozen=True)
class PolicyPack:
    """Modules (name -> Rego source), Rego unit tests, merged data and the bundle manifest."""

    modules: dict[str, str]
    tests: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """sha256 over the evaluated modules and data (tests and layout do not count)."""
        doc = {"modules": {n: hashlib.sha256(s.encode()).hexdigest() for n, s in sorted(self.modules.items())},
               "data": self.data}
        # ascii_only: the digest saved plans and audit packs record was always computed with \u escapes
        return hashlib.sha256(canonical_json(doc, ascii_only=True)).hexdigest()

    @property
    def revision(self) -> str:
        return f"{self.manifest.get('revision', 'sovkit-pack')}+{self.digest[:12]}"


def package_of(source: str, name: str) -> str:
    match = _PACKAGE_RE.search(source)
    if match is None:
        raise PolicyError(f"policy module {name} declares no package", "start it with `package sovkit.custom.<name>`")
    return match.group(1)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc}", "check the file is UTF-8 text") from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise PolicyError(f"policy data {path}:{exc.lineno}:{exc.colno}: {exc.msg}", "fix the JSON") from exc
    if not isinstance(value, dict):
        raise PolicyError(f"policy data {path} must be a JSON object", "wrap it as {\"sovkit\": {\"config\": {…}}}")
    return value


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _scan(root: Path, prefix: str) -> tuple[dict[str, str], dict[str, str], list[Path]]:
    modules: dict[str, str] = {}
    tests: dict[str, str] = {}
    for path in sorted(root.rglob("*.rego")):
        rel = f"{prefix}{path.relative_to(root).as_posix()}"
        (tests if path.name.endswith("_test.rego") else modules)[rel] = _read_text(path)
    return modules, tests, sorted(root.rglob("data.json"))


#: keys of policy input v1 that v2 replaced by shapes (docs/policy-input.md, "Shapes (v2)"): a rule reading them
#: would find nothing (a missing key is undefined in Rego) and so pass everything
_V1_INPUT = re.compile(r"\binput\.(?:hosts|racks|placements)\b|\binput\.serving\.placements\b"
                       r"|\binput\[\"(?:hosts|racks|placements)\"\]")


def v1_input_references(modules: dict[str, str]) -> list[str]:
    """``module:line`` of every reference to a v1-only input key outside comments."""
    found = []
    for name, source in sorted(modules.items()):
        for number, line in enumerate(source.splitlines(), 1):
            if _V1_INPUT.search(line.split("#", 1)[0]):
                found.append(f"{name}:{number}")
    return found


def refuse_v1_rules(modules: dict[str, str], where: str) -> None:
    """Fail closed on rules written for policy input v1: on the v2 input they would silently find nothing."""
    found = v1_input_references(modules)
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise PolicyError(f"{where} reads policy input v1 keys (input.hosts, input.racks, input.placements or "
                          f"input.serving.placements), which input v2 groups by shape: {shown}",
                          "rewrite the rules over host_shapes, rack_shapes, placement_shapes and "
                          "serving.placement_shapes (docs/policy-input.md, \"Shapes (v2)\"); a bundle built by an "
                          "older sovkit must be built again with `sovkit policy bundle`")


def load_pack(extra: Path | None = None, shipped: Path | None = None) -> PolicyPack:
    """The shipped pack, plus the modules, tests and data under ``extra`` when given."""
    root = shipped or policies_dir()
    modules, tests, data_files = _scan(root, "")
    data: dict[str, Any] = {}
    for f in data_files:
        data = deep_merge(data, _read_json(f))
    manifest_file = root / ".manifest"
    manifest = _read_json(manifest_file) if manifest_file.is_file() else {"roots": ["sovkit"]}
    if extra is not None:
        if not extra.is_dir():
            raise PolicyError(f"--policies {extra} is not a directory", "pass a directory of .rego and data.json files")
        x_modules, x_tests, x_data = _scan(extra, "custom/")
        for name, source in x_modules.items():
            pkg = package_of(source, f"{extra}/{name.removeprefix('custom/')}")
            if not pkg.startswith(CUSTOM_PREFIX):
                raise PolicyError(
                    f"extra policy {extra / name.removeprefix('custom/')} declares package {pkg}",
                    f"operator rules go in a package under {CUSTOM_PREFIX}<name> (deny/warn sets of findings)",
                )
        refuse_v1_rules({f"{extra}/{n.removeprefix('custom/')}": src for n, src in x_modules.items()},
                        f"extra policies in {extra}")
        modules.update(x_modules)
        tests.update(x_tests)
        for f in x_data:
            data = deep_merge(data, _read_json(f))
    return PolicyPack(modules=modules, tests=tests, data=data, manifest=manifest)


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, io.BytesIO(payload))


def bundle_files(pack: PolicyPack) -> dict[str, bytes]:
    """The bundle's files (path in the bundle -> bytes): .manifest, data.json, then the modules."""
    manifest = {**pack.manifest, "revision": pack.revision, "roots": pack.manifest.get("roots", ["sovkit"]),
                "metadata": {**pack.manifest.get("metadata", {}), "sovkit_version": __version__,
                             "pack_digest": pack.digest}}
    files = {".manifest": json.dumps(manifest, indent=2, sort_keys=True).encode(),
             "data.json": json.dumps(pack.data, indent=2, sort_keys=True).encode()}
    for name, source in sorted(pack.modules.items()):
        files[name if name.startswith("custom/") else f"sovkit/{name}"] = source.encode()
    return files


def bundle_bytes(pack: PolicyPack, signer: Signer | None = None) -> bytes:
    """An OPA bundle (.manifest, data.json, modules) as reproducible tar.gz bytes.

    With ``signer``, ``.signatures.json`` (OPA's bundle-signing format, first member) signs every file.
    """
    files = bundle_files(pack)
    if signer is not None:
        files = {SIGNATURES_FILE: sign_files(files, signer), **files}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload in files.items():
            _add(tar, name, payload)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


_MEMBERS = (".manifest", "data.json", SIGNATURES_FILE)


def _bundle_members(path: Path) -> dict[str, bytes]:
    """Every member of the bundle, in memory; anything but regular .manifest, data.json, .signatures.json and
    .rego files (or a name twice) is refused, so what is verified and evaluated is exactly the bundle."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                reader = tar.extractfile(member) if member.isfile() else None
                if reader is None or not (member.name in _MEMBERS or member.name.endswith(".rego")):
                    raise PolicyError(f"policy bundle {path}: unexpected member {member.name!r}",
                                      "a sovkit bundle holds only .manifest, data.json, .signatures.json and .rego "
                                      "modules")
                if member.name in files:
                    raise PolicyBundleInvalid(f"policy bundle {path}: member {member.name!r} appears twice",
                                              "the bundle is damaged or tampered with: do not use it")
                files[member.name] = reader.read()
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        raise PolicyError(f"cannot read policy bundle {path}: {exc}", "the bundle is damaged or not a sovkit "
                                                                      "policy bundle") from exc
    return files


def read_bundle(path: Path, keys: list[PublicKey] | None = None) -> PolicyPack:
    """The pack a bundle from :func:`bundle_bytes` holds: same modules and data, so the same digest.

    Read in memory (nothing is extracted). The signature is checked before anything is parsed
    (:func:`~sovkit.policy.bundle_signing.verify_files`): with ``keys`` the bundle must be signed by one of
    them and every file must match its signed digest; a signed bundle with no keys is refused too.
    """
    files = _bundle_members(path)
    verify_files(files, keys, str(path))
    modules: dict[str, str] = {}
    data: Any = {}
    manifest: Any = {}
    try:
        for name, raw in files.items():
            if name == ".manifest":
                manifest = json.loads(raw)
            elif name == "data.json":
                data = json.loads(raw)
            elif name.endswith(".rego"):
                modules[name.removeprefix("sovkit/")] = raw.decode("utf-8")
    except (UnicodeDecodeError, ValueError) as exc:
        raise PolicyError(f"cannot read policy bundle {path}: {exc}", "the bundle is damaged or not a sovkit "
                                                                      "policy bundle") from exc
    if not isinstance(data, dict) or not isinstance(manifest, dict) or not modules:
        raise PolicyError(f"policy bundle {path} is not a sovkit policy bundle",
                          "it needs modules, a data.json object and a .manifest object")
    return PolicyPack(modules=modules, data=data, manifest=manifest)


def write_bundle(pack: PolicyPack, path: Path, signer: Signer | None = None) -> str:
    """Write the bundle (signed by ``signer`` when given) to ``path``; returns the pack digest it carries."""
    payload = bundle_bytes(pack, signer)  # signing fails before anything is written
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    except OSError as exc:
        raise PolicyError(f"cannot write policy bundle {path}: {exc.strerror}", "check the output path") from exc
    return pack.digest
