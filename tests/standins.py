"""Small generated stand-ins for a production example's artifacts, with the example's structure.

Firmware images the simulator flashes (SOVKIT-SIMFW/1, per accelerator kind and version), runtime wheelhouse
archives holding a wheel named like the real package (vllm, vllm-rbln, furiosa-llm) whose console script checks
the runtime's documented argv (tests/standin_runtime/sovkit_standin.py) and serves with the demo runtime, and
model directories whose config.json carries the example's declared architecture. Everything is signed in the
example's own signature formats (DSSE for firmware and runtimes, OpenSSF model signing or DSSE for models) by
generated keys written over the example's trust-root files; the inventory data is re-pinned to match.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
import zipfile
from base64 import urlsafe_b64encode
from pathlib import Path
from typing import Any

from model_signing import signing

from sovkit.signing.artifacts import sign_artifacts
from sovkit.signing.keys import LocalSigner
from sovkit.simulator import make_firmware_image
from tests.conftest import INVENTORIES

STANDIN_SRC = Path(__file__).resolve().parent / "standin_runtime" / "sovkit_standin.py"
DEMO_RUNTIME = INVENTORIES / "demo" / "runtime" / "simnpu_serve"
FIXED_TIME = (2026, 1, 22, 0, 0, 0)
# package -> (console script, entry point in sovkit_standin)
SCRIPTS = {"vllm": ("vllm", "run_vllm_cuda"), "vllm-rbln": ("vllm", "run_vllm_rbln"),
           "furiosa-llm": ("furiosa-llm", "run_furiosa_llm")}
# firmware version the simulated devices hold before the apply, per accelerator kind
OLD_FIRMWARE = {"rebellions-rebel-quad": "2.0.0", "rebellions-atom-max": "1.8.0",
                "nvidia-h100-sxm": "96.00.89.00.01", "furiosa-rngd": "2025.1.0"}


def wheel(name: str, version: str, sources: dict[str, bytes], scripts: dict[str, str] | None = None,
          requires: tuple[str, ...] = ()) -> bytes:
    """A valid pure-Python wheel (RECORD with every digest), fixed timestamps."""
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: sovkit test stand-in\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    tags = b"Wheel-Version: 1.0\nGenerator: sovkit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files = {**sources, f"{dist}/METADATA": meta.encode(), f"{dist}/WHEEL": tags}
    if scripts:
        files[f"{dist}/entry_points.txt"] = ("[console_scripts]\n" + "".join(
            f"{k} = {v}\n" for k, v in scripts.items())).encode()
    record = [f"{p},sha256={urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
              for p, d in files.items()]
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            info = zipfile.ZipInfo(path, FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def demo_runtime_wheel() -> tuple[str, bytes]:
    """The demo runtime (simnpu_serve) as a wheel: the stand-ins' server."""
    sources = {f"simnpu_serve/{p.name}": p.read_bytes() for p in sorted(DEMO_RUNTIME.glob("*.py"))}
    return "simnpu_serve-1.0.0-py3-none-any.whl", wheel("simnpu-serve", "1.0.0", sources)


def standin_wheel(package: str, version: str) -> tuple[str, bytes]:
    """A wheel named like the real runtime package, whose console script checks that runtime's argv."""
    script, func = SCRIPTS[package]
    data = wheel(package, version, {"sovkit_standin.py": STANDIN_SRC.read_bytes()},
                 {script: f"sovkit_standin:{func}"}, ("simnpu-serve==1.0.0",))
    return f"{package.replace('-', '_')}-{version}-py3-none-any.whl", data


def wheelhouse_tar(package: str, version: str) -> bytes:
    """A vendor-style wheelhouse archive: the runtime's wheel and its dependency under ``wheelhouse/``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (standin_wheel(package, version), demo_runtime_wheel()):
            info = tarfile.TarInfo(f"wheelhouse/{name}")
            info.size, info.mtime = len(data), 1768953600
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def hf_config(model: dict[str, Any]) -> bytes:
    """A Hugging Face config.json with the example's declared architecture (layers, KV heads, head dim)."""
    arch = model["architecture"]
    heads = arch["kv_heads"] * 4
    config = {"architectures": ["StandInForCausalLM"], "num_hidden_layers": arch["layers"],
              "num_attention_heads": heads, "num_key_value_heads": arch["kv_heads"], "head_dim": arch["head_dim"],
              "hidden_size": heads * arch["head_dim"], "max_position_embeddings": 32768,
              "torch_dtype": {"bf16": "bfloat16", "fp16": "float16"}.get(model.get("dtype", "bf16"), "bfloat16"),
              "vocab_size": 256}
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


class StandIns:
    """Writes stand-in artifacts into ``store`` and re-pins/re-keys the inventory data to match."""

    def __init__(self, root: Path, data: dict[str, Any]) -> None:
        self.root, self.data, self.store = root, data, root / "standin-store"
        self.keys: dict[tuple[str, str], LocalSigner] = {}

    def key(self, section: str, name: str) -> LocalSigner:
        if (section, name) not in self.keys:
            signer = LocalSigner.generate("ecdsa-p256")  # model-signing's elliptic key signer needs EC
            entry = next(k for k in self.data["trust_roots"][section] if k["name"] == name)
            (self.root / entry["public_key"]).write_bytes(signer.public_key.pem())
            self.keys[(section, name)] = signer
        return self.keys[(section, name)]

    def put(self, art: dict[str, Any], data: bytes) -> None:
        f = self.store / art["path"]
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        art.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    def sign(self, path: str, files: list[dict[str, Any]], signer: LocalSigner, kind: str,
             item: dict[str, Any]) -> None:
        env = sign_artifacts({a["path"]: a["sha256"] for a in files}, signer, kind, item["name"], item["version"])
        (self.store / path).write_bytes(env.to_json().encode())

    def fill(self) -> None:
        for fw in self.data["firmware"]:
            self.put(fw["image"], make_firmware_image(fw["accelerator"], str(fw["version"]), seed="standin"))
            self.sign(fw["signature"], [fw["image"]], self.key("vendors", fw["vendor"]), "firmware", fw)
        for rt in self.data["runtimes"]:
            for art in rt["artifacts"]:
                if art["path"].endswith(".whl"):
                    self.put(art, standin_wheel(rt["package"], str(rt["version"]))[1])
                else:
                    self.put(art, wheelhouse_tar(rt["package"], str(rt["version"])))
            self.sign(rt["signature"], rt["artifacts"], self.key("vendors", rt["vendor"]), "runtime", rt)
        for m in self.data["models"]:
            for art in m["files"]:
                name = posixpath.basename(art["path"])
                body = f"stand-in {name} of {m['name']}\n".encode() * 32
                self.put(art, hf_config(m) if name == "config.json" else body)
            signer = self.key("publishers", m["publisher"])
            if m.get("signature_format") == "model-signing":
                priv = self.root / f"{m['publisher']}.pem"
                priv.write_bytes(signer.private_pem(None))
                model_dir = self.store / posixpath.dirname(m["files"][0]["path"])
                signing.Config().use_elliptic_key_signer(private_key=priv).sign(model_dir, self.store / m["signature"])  # type: ignore[no-untyped-call]
            else:
                self.sign(m["signature"], m["files"], signer, "model", m)
