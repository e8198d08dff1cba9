"""Regenerate the demo site's artifacts and pinned digests, deterministically.

    python inventories/demo/generate.py

Writes keys/*.pub, artifacts/ (a simulated firmware image, the demo serving
runtime's wheel packed from runtime/simnpu_serve/, a tiny model with its
publisher signature) and site.yaml with the real
sha256 and size of every artifact. Keys come from fixed seeds, Ed25519 signs
deterministically and the wheel has fixed timestamps, so running this twice
gives byte-identical files (tests/test_demo_inventory.py checks it). The seeds
are public: these keys prove nothing outside the demo.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import zipfile
from base64 import urlsafe_b64encode
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from sovkit.signing.artifacts import sign_artifacts  # noqa: E402
from sovkit.signing.keys import LocalSigner  # noqa: E402
from sovkit.simulator import make_firmware_image  # noqa: E402

PUBLISHER = LocalSigner.from_seed(b"sovkit demo publisher (public seed, demo only)")
VENDOR = LocalSigner.from_seed(b"sovkit demo npu vendor (public seed, demo only)")
FIXED_TIME = (2026, 1, 22, 0, 0, 0)


RUNTIME_SRC = HERE / "runtime" / "simnpu_serve"


def _runtime_sources(version: str) -> dict[str, bytes]:
    """The demo runtime's package files (inventories/demo/runtime/simnpu_serve/*.py), by wheel path."""
    files = {f"simnpu_serve/{p.name}": p.read_bytes() for p in sorted(RUNTIME_SRC.glob("*.py"))}
    if f'__version__ = "{version}"'.encode() not in files.get("simnpu_serve/__init__.py", b""):
        raise SystemExit(f"{RUNTIME_SRC}/__init__.py does not say __version__ = {version!r}")
    return files


def _wheel(name: str, version: str, sources: dict[str, bytes]) -> bytes:
    """A valid pure-Python wheel (RECORD with every digest) with fixed timestamps (reproducible bytes)."""
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    files = {
        **sources,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        "Summary: sovkit demo serving runtime\nRequires-Python: >=3.9\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: sovkit-demo\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": b"[console_scripts]\nsimnpu-serve = simnpu_serve.cli:run\n",
    }
    record = []
    for path, data in files.items():
        digest = urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            info = zipfile.ZipInfo(path, FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def _model_files() -> dict[str, bytes]:
    # the shape site.yaml.in declares (architecture: 2 layers, 4 KV heads, head dim 16; parameters_b 0.001): a
    # gated MLP of 2476 and tied embeddings make 2 x (4 x 64 x 64 + 3 x 64 x 2476) + 256 x 64 = 999,936 parameters,
    # so the serving planner (which reads this file through models[].config) predicts for the model declared
    config = {"architectures": ["DemoForCausalLM"], "model_type": "llama", "hidden_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 16,
              "intermediate_size": 2476, "vocab_size": 256, "tie_word_embeddings": True,
              "max_position_embeddings": 4096, "torch_dtype": "bfloat16"}
    weights = b"".join(hashlib.sha256(b"demo-weights-%d" % i).digest() for i in range(2048))  # 64 KiB
    return {
        "config.json": (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(),
        "model.safetensors": weights,
        "tokenizer.json": b'{"model": {"type": "BPE", "vocab": {}}, "version": "1.0"}\n',
    }


def write(path: Path, data: bytes) -> tuple[str, int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), len(data)


def generate(out: Path = HERE) -> None:
    art = out / "artifacts"
    (out / "keys").mkdir(parents=True, exist_ok=True)
    (out / "keys" / "publisher.pub").write_bytes(PUBLISHER.public_key.pem())
    (out / "keys" / "vendor-rebellions.pub").write_bytes(VENDOR.public_key.pem())

    pins: dict[str, tuple[str, int]] = {}
    for version in ("1.2.0", "1.3.0"):
        rel = f"firmware/atom-max-{version}.fw"
        pins[rel] = write(art / rel, make_firmware_image("rebellions-atom-max", version, seed="demo"))
        env = sign_artifacts({rel: pins[rel][0]}, VENDOR, "firmware", f"atom-max-fw-{version}", version)
        write(art / (rel + ".sig"), env.to_json().encode())

    whl = "runtime/simnpu_serve-1.0.0-py3-none-any.whl"
    pins[whl] = write(art / whl, _wheel("simnpu-serve", "1.0.0", _runtime_sources("1.0.0")))
    env = sign_artifacts({whl: pins[whl][0]}, VENDOR, "runtime", "simnpu-serve", "1.0.0")
    write(art / "runtime/simnpu-serve-1.0.0.sig", env.to_json().encode())

    model_pins = {}
    for name, data in _model_files().items():
        rel = f"models/demo-ko-chat/1.0/{name}"
        pins[rel] = model_pins[rel] = write(art / rel, data)
    env = sign_artifacts({p: d for p, (d, _) in model_pins.items()}, PUBLISHER, "model", "demo-ko-chat", "1.0")
    write(art / "models/demo-ko-chat/1.0/model.sig", env.to_json().encode())

    template = (HERE / "site.yaml.in").read_text(encoding="utf-8")
    for rel, (digest, size) in pins.items():
        template = template.replace(f"@sha256:{rel}@", digest).replace(f"@size:{rel}@", str(size))
    if "@" in "".join(line.split("#")[0] for line in template.splitlines()):
        raise SystemExit("site.yaml.in references an artifact this script does not make")
    (out / "site.yaml").write_text(template, encoding="utf-8")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
