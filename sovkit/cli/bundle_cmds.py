"""`sovkit bundle create|verify|import|split|join`: air-gapped transfer with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from sovkit import api
from sovkit.cli.options import JsonOpt
from sovkit.cli.output import console, emit_json, emit_result, err_console
from sovkit.cli.signing import key_ref, load_signer
from sovkit.errors import SigningKeyError, SovkitError

bundle_app = typer.Typer(help="Air-gapped bundles: create, split, join, verify, import.", no_args_is_help=True)

PubKeyOpt = Annotated[list[Path] | None, typer.Option("--key", help="Public key(s) trusted to sign bundles (.pub).",
                                               show_default=False)]


class _Bar:
    """Turns bundle events into a rich progress bar with throughput (on stderr; off with --json)."""

    def __init__(self, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
            TransferSpeedColumn(), TimeRemainingColumn(), console=err_console, transient=False,
        ) if enabled else None
        self.task: TaskID | None = None

    def __enter__(self) -> _Bar:
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(None, None, None)

    def __call__(self, event: api.BundleEvent) -> None:
        if self.progress is None:
            return
        if event.kind == "start":
            self.task = self.progress.add_task(event.phase, total=event.total)
        elif event.kind == "bytes" and self.task is not None:
            self.progress.advance(self.task, event.n)
        elif event.kind == "note":
            self.progress.console.print(f"[dim]{escape(event.message)}[/]")


def _signer(key: str | None) -> api.Signer:
    ref = key_ref(key)
    if ref is None:
        raise SigningKeyError("no signing key given", "pass --key PRIVATE_KEY (or a pkcs11: URI) or set "
                                                      "SOVKIT_SIGNING_KEY")
    if isinstance(ref, Path) and not ref.exists():
        raise SigningKeyError(f"signing key {ref} not found", "pass the private key that signs bundles with --key")
    return load_signer(ref)


def _keys(paths: list[Path] | None) -> list[api.PublicKey]:
    if not paths:
        raise SigningKeyError("no public key given", "pass the bundle signer's public key with --key KEY.pub")
    return [api.load_public_key(path=p) for p in paths]


@bundle_app.command("create")
def create(
    inventory: Annotated[Path, typer.Argument(help="Inventory file or directory.", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="New bundle directory (or volumes directory).")],
    artifacts: Annotated[list[Path] | None, typer.Option("--artifacts", help="Directories to find artifacts in "
                                                         "(before the inventory's own store).")] = None,
    since: Annotated[Path | None, typer.Option("--since", help="Manifest of the bundle the site already has: "
                                               "carry only what is new.")] = None,
    volume_size: Annotated[str | None, typer.Option("--volume-size", help="Split into parts of this size "
                                                    "(e.g. 4G) for removable media.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Private key that signs the manifest, a file or a "
                                            "pkcs11: URI (default: $SOVKIT_SIGNING_KEY).")] = None,
    no_self: Annotated[bool, typer.Option("--no-self", help="Leave out sovkit's own wheel and its "
                                          "dependencies.")] = False,
    wheel_cache: Annotated[Path | None, typer.Option("--wheel-cache", help="Cache for built/downloaded wheels "
                                                     "(default ~/.cache/sovkit/wheels).")] = None,
    platform: Annotated[str | None, typer.Option("--platform", help="Platform of the machine that will run "
                                                 "sovkit, for its wheels: linux/aarch64 or linux/x86_64 "
                                                 "(default: this machine's).")] = None,
    python: Annotated[str | None, typer.Option("--python", help="Python (MAJOR.MINOR) that will run sovkit there "
                                               "(default: this one's).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Bundle every artifact the inventory needs, the policy pack, the Ansible content and sovkit itself."""
    size = api.parse_size(volume_size) if volume_size else None
    signer = _signer(key)
    with _Bar(not json_out) as bar:
        result = api.bundles.create(inventory, out, signer, artifacts, since, size, not no_self, wheel_cache, bar,
                                    platform=platform, python=python)
    m = result.bundle.manifest
    if json_out:
        emit_result(api.BundleCreated.of(str(out), result))
        return
    console.print(f"[green]✓[/] bundle for site {escape(m.site)}: {len(m.entries)} file(s), "
                  f"{result.bundle.carried_files} blob(s) carried ({result.bundle.carried_bytes} bytes)"
                  + (f", differential since {m.since[:16]}…" if m.since else ""))
    console.print(f"  manifest sha256:{m.digest()}  signed by {signer.keyid[:16]}…")
    if m.target is not None:
        console.print(f"  sovkit's wheels for {m.target.label()}"
                      + (f" (glibc ≥ {m.target.glibc})" if m.target.glibc else ""))
    if result.volumes:
        parts = result.volumes.index.parts
        console.print(f"  {len(parts)} volume(s) in {escape(str(out))}: "
                      + ", ".join(f"{p.name} ({p.size} bytes)" for p in parts))
        console.print("  copy volumes.json and the parts to each medium; join with `sovkit bundle join`")


@bundle_app.command("verify")
def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.", show_default=False)],
    key: PubKeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check signature, every size and digest, nothing missing or extra, no unsafe paths or links."""
    keys = _keys(key)
    with _Bar(not json_out) as bar:
        result = api.bundles.verify(bundle, keys, bar)
    if json_out:
        emit_json(result.model_dump(mode="json"))
    else:
        for s in result.steps:  # the problems follow once, in the error below
            mark = {"ok": "[green]✓[/]", "not-checked": "[yellow]-[/]"}.get(s.status, "[red]✗[/]")
            what = s.detail if s.status != "failed" else f"{len(s.problems)} problem(s)"
            console.print(f"{mark} {s.name}" + (f": {escape(what)}" if what else ""))
    if not result.ok:
        raise api.BundleInvalid([p for s in result.failures for p in s.problems])
    if not json_out:
        f = result.facts
        console.print(f"[green]✓[/] bundle is intact and signed: {f['entries']} file(s), {f['blobs']} blob(s), "
                      f"{f['bytes']} bytes checked")


@bundle_app.command("import")
def import_(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.", show_default=False)],
    store: Annotated[Path | None, typer.Option("--store", help="The site's artifact store directory.")] = None,
    key: PubKeyOpt = None,
    site_dir: Annotated[Path | None, typer.Option("--site-dir", help="Also write the inventory, policy pack, "
                                                  "templates and wheels under this directory.")] = None,
    registry: Annotated[str | None, typer.Option("--registry", help="Push the artifacts to this OCI registry "
                                                 "repository instead: https://HOST[:PORT]/REPOSITORY.")] = None,
    ca: Annotated[Path | None, typer.Option("--ca", help="The registry's CA file (PEM).")] = None,
    credentials_env: Annotated[str | None, typer.Option("--credentials-env", help="Variable holding the registry's "
                                                        "USER:PASSWORD (or a token).")] = None,
    credentials_file: Annotated[Path | None, typer.Option("--credentials-file", help="File whose first line is "
                                                          "USER:PASSWORD (or a token).")] = None,
    tag: Annotated[str, typer.Option("--tag", help="The store manifest's tag (artifact_store.tag).")] = "sovkit-store",
    json_out: JsonOpt = False,
) -> None:
    """Verify, then commit into the artifact store atomically per file (or push to a registry); a failure
    changes nothing."""
    keys = _keys(key)
    if (store is None) == (registry is None):
        raise SovkitError("give exactly one of --store DIR or --registry URL",
                              "--store fills a local artifact store, --registry an OCI one")
    if registry is not None:
        if site_dir is not None:
            raise SovkitError("--site-dir goes with --store", "import the site files with a --store run")
        with _Bar(not json_out) as bar:
            pushed = api.bundles.import_registry(bundle, registry, keys, ca, credentials_env, credentials_file,
                                                 tag, bar)
        if json_out:
            emit_json({"reference": pushed.reference, "manifest_sha256": pushed.manifest.digest(),
                       "store_manifest": pushed.manifest_digest, "pushed": pushed.pushed, "present": pushed.present})
            return
        console.print(f"[green]✓[/] pushed to {escape(pushed.reference)}: {len(pushed.pushed)} blob(s) uploaded, "
                      f"{len(pushed.present)} already there; store manifest {pushed.manifest_digest}")
        return
    assert store is not None
    with _Bar(not json_out) as bar:
        report = api.bundles.import_(bundle, store, keys, site_dir, bar)
    if json_out:
        emit_result(api.BundleImported.of(report))
        return
    console.print(f"[green]✓[/] imported into {escape(str(store))}: {len(report.committed)} file(s) written, "
                  f"{len(report.unchanged)} already there"
                  + (f" ({report.reused} blob(s) verified by an earlier run, not hashed again)"
                     if report.reused else ""))


@bundle_app.command("split")
def split(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="New directory for the parts.")],
    size: Annotated[str, typer.Option("--size", help="Part size, e.g. 4G.")],
    json_out: JsonOpt = False,
) -> None:
    """Cut a bundle into fixed-size parts for removable media."""
    part_size = api.parse_size(size)
    with _Bar(not json_out) as bar:
        report = api.bundles.split(bundle, out, part_size, bar)
    if json_out:
        emit_result(report)
        return
    console.print(f"[green]✓[/] {len(report.index.parts)} part(s) in {escape(str(out))}")


@bundle_app.command("join")
def join(
    parts: Annotated[list[Path], typer.Argument(help="Part files and/or directories holding them and "
                                                "volumes.json.", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="Bundle directory to (re)build.")],
    json_out: JsonOpt = False,
) -> None:
    """Rebuild a bundle from its parts; resumable, and can be run disk by disk."""
    with _Bar(not json_out) as bar:
        report = api.bundles.join(parts, out, bar)
    if json_out:
        emit_result(report)
        return
    console.print(f"[green]✓[/] joined into {escape(str(out))}: {report.written} file(s) written, "
                  f"{report.reused} verified earlier; now run `sovkit bundle verify`")


def register(app: typer.Typer) -> None:
    app.add_typer(bundle_app, name="bundle")
