"""The model a server loads: its files checked against the signed manifest, its KV size, its answers.

The manifest is the publisher's signature file that sovkit's model role keeps beside the files
(``.sovkit-signature``): a DSSE envelope whose in-toto statement lists every file with its sha256
(sovkit's ``dsse`` format), or an OpenSSF Model Signing bundle (``model-signing``). sovkit verified
the signature itself (the publisher's key) before it installed the files; this check only proves
that the files the server is about to load are still the signed ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = ".sovkit-signature"
# torch_dtype -> (short name as the inventory spells it, bytes per element)
DTYPES = {"bfloat16": ("bf16", 2), "bf16": ("bf16", 2), "float16": ("fp16", 2), "fp16": ("fp16", 2),
          "half": ("fp16", 2), "float32": ("fp32", 4), "float": ("fp32", 4), "fp8": ("fp8", 1),
          "float8": ("fp8", 1), "int8": ("int8", 1)}


class RefuseToStart(Exception):
    """The model cannot be served; the message is the one line the server prints before exiting."""


@dataclass(frozen=True)
class LoadedModel:
    root: Path  # the resolved model directory; its basename is the version
    version: str
    files: dict[str, str]  # file name -> sha256, as checked
    kv_per_token: int  # bytes of K and V for one token over all layers
    kv_dtype: str


def signed_files(manifest: Path) -> dict[str, str]:
    """``{file name relative to the model directory: sha256}`` as the signed manifest lists them."""
    try:
        document = json.loads(manifest.read_bytes())
    except OSError as exc:
        raise RefuseToStart(f"cannot read the signed manifest {manifest}: {exc.strerror}") from None
    except ValueError:
        raise RefuseToStart(f"signed manifest {manifest} is not JSON") from None
    try:
        if isinstance(document, dict) and "dsseEnvelope" in document:  # OpenSSF Model Signing bundle
            statement = _payload(document["dsseEnvelope"])
            return {str(r["name"]): str(r["digest"]) for r in statement["predicate"]["resources"]}
        statement = _payload(document)
        subjects = {str(s["name"]): str(s["digest"]["sha256"]) for s in statement["subject"]}
    except (KeyError, TypeError, ValueError):
        raise RefuseToStart(f"signed manifest {manifest} holds no in-toto statement listing files") from None
    # sovkit signs store paths (models/NAME/VERSION/FILE); the host keeps them relative to their common directory
    parents = [posixpath.dirname(n) for n in subjects]
    common = posixpath.commonpath(parents) if parents else ""
    return {(posixpath.relpath(n, common) if common else n): d for n, d in subjects.items()}


def _payload(envelope: Any) -> Any:
    return json.loads(base64.b64decode(envelope["payload"], validate=True))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load(model_path: Path, manifest: Path | None) -> LoadedModel:
    """Resolve the model directory, check every signed file, read config.json; raise RefuseToStart."""
    root = model_path.resolve()
    if not root.is_dir():
        raise RefuseToStart(f"model directory {model_path} does not exist")
    manifest = manifest or root / MANIFEST_NAME
    if not manifest.is_file():
        raise RefuseToStart(f"no signed manifest at {manifest} (pass --manifest PATH)")
    files = signed_files(manifest)
    if not files:
        raise RefuseToStart(f"signed manifest {manifest} lists no files")
    for name, want in sorted(files.items()):
        path = root / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise RefuseToStart(f"signed manifest names a file outside the model directory: {name}")
        if not path.is_file():
            raise RefuseToStart(f"model file {name} listed in the signed manifest is missing from {root}")
        got = sha256_file(path)
        if got != want:
            raise RefuseToStart(f"model file {name}: sha256 {got} differs from the signed manifest's {want}")
    per_token, dtype = kv_per_token(root / "config.json")
    return LoadedModel(root=root, version=root.name, files=files, kv_per_token=per_token, kv_dtype=dtype)


def kv_per_token(config_file: Path) -> tuple[int, str]:
    """2 (K and V) x layers x KV heads x head dim x bytes of the dtype, from a Hugging Face config.json."""
    try:
        config = json.loads(config_file.read_bytes())
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
        dtype = str(config.get("torch_dtype", "bfloat16"))
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        raise RefuseToStart(f"{config_file.name} does not give num_hidden_layers, num_attention_heads "
                            "and hidden_size (or head_dim)") from None
    if dtype not in DTYPES:
        raise RefuseToStart(f"{config_file.name}: unknown torch_dtype {dtype}")
    short, size = DTYPES[dtype]
    return 2 * layers * kv_heads * head_dim * size, short


def max_position_embeddings(config_file: Path) -> int | None:
    """The longest sequence the model supports, when its config.json says (Hugging Face's key)."""
    try:
        value = json.loads(config_file.read_bytes()).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def prompt_tokens(prompt: str) -> int:
    """Byte-level tokens (the demo model's vocabulary is 256 bytes); at least one."""
    return max(1, len(prompt.encode("utf-8")))


def kv_payload(model: LoadedModel, prompt: str) -> bytes:
    """The prompt's KV cache stand-in: kv_per_token x prompt tokens bytes, deterministic in the prompt."""
    size = model.kv_per_token * prompt_tokens(prompt)
    return hashlib.shake_256(f"{model.version}\0{prompt}".encode()).digest(size)


def answer_tokens(model: LoadedModel, served_name: str, prompt: str) -> list[str]:
    """A trivial, deterministic answer that names the model version (the demo weights are toys)."""
    tag = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8]
    words = ["Hello", "from", served_name, "version", model.version + ":", "your", "prompt", "had",
             str(prompt_tokens(prompt)), "tokens", f"(#{tag})."]
    return [w if i == 0 else " " + w for i, w in enumerate(words)]
