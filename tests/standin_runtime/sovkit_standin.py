"""Stand-ins for vLLM (CUDA), vllm-rbln and furiosa-llm: each checks its argv and environment the way the
runtime documents them, then serves with the demo runtime (simnpu_serve) on the same port.

Packed into wheels named like the real packages (tests/standins.py), whose console scripts are ``vllm`` and
``furiosa-llm``. Anything the runtime would not accept — an unknown flag, a missing one, a malformed value, a
device list in the wrong form — makes the stand-in exit 2 before it listens, so a deployment only becomes ready
when sovkit launched it in the runtime's own format. Standard library only (it runs on the hosts).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from simnpu_serve.cli import main as simnpu_main

_CSV_INTS = re.compile(r"^\d+(,\d+)*$")
_NPU_DEVICES = re.compile(r"^npu:\d+(,npu:\d+)*$")  # [V] furiosa-llm --devices "npu:0,npu:1"
VLLM_CONNECTORS = ("NixlConnector", "P2pNcclConnector", "LMCacheConnectorV1")  # [V] vllm kv_connector/factory
RBLN_CONNECTORS = ("RblnNixlConnector", "RblnP2pGlooConnector")  # [V] vllm_rbln kv_connector/factory
KV_ROLES = ("kv_producer", "kv_consumer", "kv_both")


def _refuse(prog: str, message: str) -> NoReturn:
    print(f"{prog} (sovkit stand-in): refusing: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _refuse(self.prog, message)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _kv_config(prog: str, text: str | None, connectors: tuple[str, ...]) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        _refuse(prog, "--kv-transfer-config is not JSON")
    if not isinstance(doc, dict) or doc.get("kv_connector") not in connectors or doc.get("kv_role") not in KV_ROLES:
        _refuse(prog, f"--kv-transfer-config needs kv_connector in {connectors} and kv_role in {KV_ROLES}: {text}")
    return doc


def _env_devices(prog: str, name: str) -> list[str]:
    value = os.environ.get(name, "")
    if not _CSV_INTS.match(value):
        _refuse(prog, f"{name} must be a comma-separated list of device indices, not {value!r}")
    return value.split(",")


def _serve(prog: str, args: argparse.Namespace, devices: list[str], kv: dict[str, Any] | None) -> int:
    print(f"{prog} (sovkit stand-in): accepted {json.dumps(sys.argv[1:])} devices={','.join(devices)}",
          file=sys.stderr, flush=True)
    argv = ["serve", args.model, "--host", args.host, "--port", str(args.port),
            "--served-model-name", args.served_model_name, "--tensor-parallel-size", str(args.tensor_parallel_size),
            "--devices", ",".join(f"npu:{d}" for d in devices)]
    if getattr(args, "max_model_len", None):
        argv += ["--max-model-len", str(args.max_model_len), "--max-num-seqs", str(args.max_num_seqs)]
    if kv is not None:
        argv += ["--kv-transfer-config", json.dumps(kv)]
    return simnpu_main(argv)


def _vllm_parser(prog: str) -> tuple[_Parser, argparse.ArgumentParser]:
    parser = _Parser(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = sub.add_parser("serve")
    serve.add_argument("model")
    for flag in ("--served-model-name", "--host"):
        serve.add_argument(flag, required=True)
    for flag in ("--port", "--tensor-parallel-size", "--max-model-len", "--max-num-seqs"):
        serve.add_argument(flag, type=_positive, required=True)
    serve.add_argument("--kv-transfer-config")
    return parser, serve


def vllm_cuda(argv: list[str] | None = None) -> int:
    """``vllm serve MODEL ...`` as upstream vLLM takes it, devices in CUDA_VISIBLE_DEVICES."""
    prog = "vllm"
    parser, serve = _vllm_parser(prog)
    serve.add_argument("--speculative-config")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    devices = _env_devices(prog, "CUDA_VISIBLE_DEVICES")
    if len(devices) < args.tensor_parallel_size:
        _refuse(prog, f"--tensor-parallel-size {args.tensor_parallel_size} needs that many visible GPUs, "
                      f"CUDA_VISIBLE_DEVICES has {len(devices)}")
    return _serve(prog, args, devices, _kv_config(prog, args.kv_transfer_config, VLLM_CONNECTORS))


def vllm_rbln(argv: list[str] | None = None) -> int:
    """``vllm serve`` with the vllm-rbln plugin: tensor_parallel_size 1, block size, devices per rank from env."""
    prog = "vllm"
    parser, serve = _vllm_parser(prog)
    serve.add_argument("--block-size", type=_positive, required=True)
    serve.add_argument("--model-impl", choices=["vllm"])
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.tensor_parallel_size != 1:
        _refuse(prog, "vllm-rbln needs --tensor-parallel-size 1 (devices per rank come from the environment)")
    if args.max_model_len % args.block_size:
        _refuse(prog, f"--block-size {args.block_size} must divide --max-model-len {args.max_model_len}")
    devices = _env_devices(prog, "RBLN_VISIBLE_DEVICES")
    per_rank = os.environ.get("VLLM_RBLN_NUM_DEVICES_PER_LOCAL_RANK", "")
    if per_rank != str(len(devices)):
        _refuse(prog, f"VLLM_RBLN_NUM_DEVICES_PER_LOCAL_RANK {per_rank!r} must equal the number of "
                      f"RBLN_VISIBLE_DEVICES ({len(devices)})")
    kv = _kv_config(prog, args.kv_transfer_config, RBLN_CONNECTORS)
    if kv is not None and args.model_impl != "vllm":
        _refuse(prog, "disaggregated prefill/decode needs --model-impl vllm")
    return _serve(prog, args, devices, kv)


def furiosa_llm(argv: list[str] | None = None) -> int:
    """``furiosa-llm serve MODEL --devices "npu:0,npu:1" --tensor-parallel-size N --port P ...``."""
    prog = "furiosa-llm"
    parser = _Parser(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = sub.add_parser("serve")
    serve.add_argument("model")
    for flag in ("--devices", "--served-model-name", "--host"):
        serve.add_argument(flag, required=True)
    for flag in ("--port", "--tensor-parallel-size"):
        serve.add_argument(flag, type=_positive, required=True)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not _NPU_DEVICES.match(args.devices):
        _refuse(prog, f"--devices must look like npu:0,npu:1, not {args.devices!r}")
    devices = [d.removeprefix("npu:") for d in args.devices.split(",")]
    if len(devices) < args.tensor_parallel_size:
        _refuse(prog, f"--tensor-parallel-size {args.tensor_parallel_size} needs that many --devices")
    return _serve(prog, args, devices, None)


ENTRY_POINTS: dict[str, Callable[[list[str] | None], int]] = {
    "vllm": vllm_cuda, "vllm-rbln": vllm_rbln, "furiosa-llm": furiosa_llm}


def run_vllm_cuda() -> None:
    sys.exit(vllm_cuda())


def run_vllm_rbln() -> None:
    sys.exit(vllm_rbln())


def run_furiosa_llm() -> None:
    sys.exit(furiosa_llm())
