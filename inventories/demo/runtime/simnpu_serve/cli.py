"""Command line, shaped like ``vllm serve`` so the runtime profile's argv template fits both."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

from simnpu_serve import __version__
from simnpu_serve.model import RefuseToStart, load, max_position_embeddings
from simnpu_serve.server import ROLES, App, Config, make_servers


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simnpu-serve", description="sovkit demo NPU serving runtime (simulated)")
    p.add_argument("--version", action="version", version=f"simnpu-serve {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve a model directory over an OpenAI-compatible HTTP API")
    s.add_argument("model_path", type=Path, help="model directory (e.g. .../models/NAME/current)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--served-model-name", default=None, help="model id in the API (default: MODEL_PATH)")
    s.add_argument("--tensor-parallel-size", type=int, default=1)
    s.add_argument("--max-model-len", type=int, default=4096)
    s.add_argument("--max-num-seqs", type=int, default=8)
    s.add_argument("--devices", default="", help="simulated devices, e.g. npu:0,npu:1")
    s.add_argument("--kv-transfer-config", default=None, help="vLLM-format JSON: kv_role, kv_ip, kv_port, ...")
    s.add_argument("--speculative-config", default=None, help="vLLM-format JSON (accepted, recorded)")
    s.add_argument("--manifest", type=Path, default=None,
                   help="signed manifest to check the files against (default: MODEL_PATH/.sovkit-signature)")
    s.add_argument("--kv-wait-s", type=float, default=30.0, help="how long decode waits for a KV payload")
    return p


def _fail(message: str) -> NoReturn:
    print(f"simnpu-serve: refusing to start: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _json_arg(name: str, text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        _fail(f"{name} is not JSON")
    if not isinstance(doc, dict):
        _fail(f"{name} must be a JSON object")
    return doc


def _config(args: argparse.Namespace) -> Config:
    for flag in ("tensor_parallel_size", "max_model_len", "max_num_seqs"):
        if getattr(args, flag) < 1:
            _fail(f"--{flag.replace('_', '-')} must be >= 1")
    kv = _json_arg("--kv-transfer-config", args.kv_transfer_config)
    cfg = Config(served_name=args.served_model_name or str(args.model_path), role="both",
                 max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
                 tensor_parallel_size=args.tensor_parallel_size, devices=args.devices,
                 kv_wait_s=args.kv_wait_s, speculative=_json_arg("--speculative-config", args.speculative_config))
    if kv:
        role = kv.get("kv_role")
        if role not in ROLES:
            _fail(f"--kv-transfer-config kv_role must be one of {', '.join(ROLES)}, not {role!r}")
        cfg.role = ROLES[role]
        cfg.kv_connector = str(kv.get("kv_connector", ""))
        cfg.kv_ip = str(kv.get("kv_ip", "127.0.0.1"))
        port = kv.get("kv_port", 14579)
        if not isinstance(port, int) or not 0 < port < 65536:
            _fail("--kv-transfer-config kv_port must be a port number")
        cfg.kv_port = port
    return cfg


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    cfg = _config(args)
    try:
        model = load(args.model_path, args.manifest)
    except RefuseToStart as exc:
        _fail(str(exc))
    limit = max_position_embeddings(model.root / "config.json")
    if limit is not None and cfg.max_model_len > limit:
        # as vLLM refuses a max_model_len beyond what the model was trained for
        _fail(f"--max-model-len {cfg.max_model_len} is greater than the model's max_position_embeddings {limit}")
    app = App(model, cfg)
    try:
        servers = make_servers(app, args.host, args.port)
    except OSError as exc:
        _fail(f"cannot listen on {args.host} (port {args.port}, kv port {cfg.kv_port}): {exc.strerror or exc}")

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    for extra in servers[:-1]:
        threading.Thread(target=extra.serve_forever, daemon=True).start()
    kv_note = f", KV listener on port {cfg.kv_port}" if cfg.role == "decode" else ""
    print(f"simnpu-serve {__version__}: serving {cfg.served_name} version {model.version} as {cfg.role} on "
          f"http://{args.host}:{args.port}{kv_note}", file=sys.stderr, flush=True)
    try:
        servers[-1].serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        for s in servers:
            s.server_close()
    return 0


def run() -> None:
    """Console-script entry point (``simnpu-serve serve ...``)."""
    sys.exit(main(sys.argv[1:]))
