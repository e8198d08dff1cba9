"""Serving: apply start to the first answered request on the demo site, and the router's overhead.

    python bench/serving_bench.py [--requests 1000] [--prompt-bytes 64] [--skip-apply]

Apply to first answer: a fresh copy of the demo site (its ports moved to free ones) is applied with
`sovkit apply --auto-approve` (install firmware, runtime, model; start prefill, decode and router; readiness
and smoke checks), then one completion is sent through the router; printed: the apply's time, the time from
apply start to that answer, and the share of it spent after the apply returned. `sovkit serving stop`
stops the processes afterwards.

Router overhead:

Starts the demo runtime as decode (kv_consumer) and prefill (kv_producer) and sovkit's router
(templates/serving/router.py), all on loopback, on a copy of the demo model. Then sends
``--requests`` sequential completions two ways, interleaved in blocks of 100 so load changes hit
both alike, each over one kept-alive client connection per server:
  router: POST /v1/completions to the router (it calls prefill, then decode)
  direct: the client POSTs to prefill (max_tokens 1, do_remote_decode) and then to decode with the
          returned kv_transfer_params — the same two hops and the same KV transfer, minus the router
Prints p50/p95 of each, the ratio p50 router/direct and the absolute difference (goal: router p50
<= 1.1 x direct p50 + 2 ms). Every answer is checked (status 200, the model version in the text).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_SRC = ROOT / "inventories/demo/runtime"
MODEL_SRC = ROOT / "inventories/demo/artifacts/models/demo-ko-chat/1.0"
NAME = "demo-ko-chat"
ENV = {**os.environ, "PYTHONPATH": str(RUNTIME_SRC), "PYTHONDONTWRITEBYTECODE": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_dir(tmp: Path) -> Path:
    base = tmp / "models" / NAME / "1.0"
    base.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(MODEL_SRC / name, base / name)
    shutil.copy(MODEL_SRC / "model.sig", base / ".sovkit-signature")
    return base


def wait_health(port: int, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"a server exited with {proc.returncode} before it was healthy")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.05)
        finally:
            conn.close()
    raise SystemExit(f"no healthy server on :{port} within 30 s")


def post(conn: http.client.HTTPConnection, body: dict[str, Any]) -> dict[str, Any]:
    conn.request("POST", "/v1/completions", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise SystemExit(f"HTTP {resp.status}: {data[:300]!r}")
    doc: dict[str, Any] = json.loads(data)
    return doc


def nodelay(conn: http.client.HTTPConnection) -> http.client.HTTPConnection:
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def run(requests: int, prompt_bytes: int) -> dict[str, list[float]]:
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = model_dir(Path(tmp))
        d, p, r, kv = free_port(), free_port(), free_port(), free_port()

        def start(argv: list[str], port: int) -> None:
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV))
            wait_health(port, procs[-1])

        try:
            for role, rank, port in (("kv_consumer", 1, d), ("kv_producer", 0, p)):
                config = json.dumps({"kv_connector": "SovkitDemoConnector", "kv_role": role, "kv_rank": rank,
                                     "kv_parallel_size": 2, "kv_ip": "127.0.0.1", "kv_port": kv})
                start([sys.executable, "-m", "simnpu_serve", "serve", str(model), "--port", str(port),
                       "--served-model-name", NAME, "--kv-transfer-config", config], port)
            start([sys.executable, str(ROOT / "templates/serving/router.py"), "--port", str(r),
                   "--prefill", f"http://127.0.0.1:{p}", "--decode", f"http://127.0.0.1:{d}"], r)
            return measure(requests, prompt_bytes, d, p, r)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=10)


def measure(requests: int, prompt_bytes: int, d: int, p: int, r: int) -> dict[str, list[float]]:
    router = nodelay(http.client.HTTPConnection("127.0.0.1", r, timeout=30))
    prefill = nodelay(http.client.HTTPConnection("127.0.0.1", p, timeout=30))
    decode = nodelay(http.client.HTTPConnection("127.0.0.1", d, timeout=30))
    prompt = ("sovkit bench " * prompt_bytes)[:prompt_bytes]
    req = {"model": NAME, "prompt": prompt, "max_tokens": 16}

    def via_router() -> dict[str, Any]:
        return post(router, req)

    def direct() -> dict[str, Any]:
        first = post(prefill, {**req, "max_tokens": 1, "stream": False,
                               "kv_transfer_params": {"do_remote_decode": True}})
        return post(decode, {**req, "kv_transfer_params": first["kv_transfer_params"]})

    ways = {"router": via_router, "direct": direct}
    times: dict[str, list[float]] = {"router": [], "direct": []}
    for fn in ways.values():  # warm up both paths (connections, imports, caches)
        for _ in range(50):
            fn()
    block = 100
    for start in range(0, requests, block):
        for name, fn in ways.items():
            for _ in range(min(block, requests - start)):
                t0 = time.perf_counter()
                doc = fn()
                times[name].append((time.perf_counter() - t0) * 1000)
                if "version 1.0" not in doc["choices"][0]["text"]:
                    raise SystemExit(f"unexpected answer: {doc}")
    return times


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def apply_to_first_answer() -> None:
    """Time `sovkit apply` on a fresh demo site, then the first request answered through its router."""
    import yaml

    with tempfile.TemporaryDirectory(prefix="sovkit-serving-bench-") as tmp:
        work = Path(tmp) / "demo"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        prepared = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                                   "from sovkit.demo import prepare_demo; print(prepare_demo(Path(sys.argv[1])))",
                                   str(work)], env=env, capture_output=True, text=True, check=True)
        site = Path(prepared.stdout.strip())
        data = yaml.safe_load(site.read_text())
        group = data["serving_groups"][0]
        data["deployments"][0]["port"], data["deployments"][1]["port"] = free_port(), free_port()
        group["kv_transfer"]["port"], group["router"]["port"] = free_port(), free_port()
        site.write_text(yaml.safe_dump(data, sort_keys=False))
        started = time.perf_counter()
        applied = subprocess.run([sys.executable, "-m", "sovkit", "apply", str(site), "--auto-approve"], env=env,
                                 capture_output=True, text=True)
        apply_s = time.perf_counter() - started
        try:
            if applied.returncode != 0:
                raise SystemExit(f"apply failed:\n{applied.stdout}\n{applied.stderr}")
            conn = nodelay(http.client.HTTPConnection("127.0.0.1", group["router"]["port"], timeout=30))
            answer = post(conn, {"model": NAME, "prompt": "hello", "max_tokens": 8})
            first_s = time.perf_counter() - started
            assert "version 1.0" in answer["choices"][0]["text"], answer
        finally:
            subprocess.run([sys.executable, "-m", "sovkit", "serving", "stop", str(site)], env=env,
                           capture_output=True, check=False)
    print(f"apply (install + start + readiness + smoke, 2 hosts, 3 processes): {apply_s:.1f} s; "
          f"apply start -> first request answered through the router: {first_s:.1f} s "
          f"({(first_s - apply_s) * 1000:.0f} ms after apply returned, {first_s / apply_s:.3f}x the apply)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--prompt-bytes", type=int, default=64)
    parser.add_argument("--skip-apply", action="store_true", help="only the router overhead")
    args = parser.parse_args()
    if not args.skip_apply:
        apply_to_first_answer()
    times = run(args.requests, args.prompt_bytes)
    config = json.loads((MODEL_SRC / "config.json").read_text())
    heads = config["num_attention_heads"]
    per_token = 2 * config["num_hidden_layers"] * config.get("num_key_value_heads", heads) * (
        config["hidden_size"] // heads) * 2  # bf16
    kv_bytes = per_token * args.prompt_bytes
    print(f"requests: {args.requests} sequential per path, prompt {args.prompt_bytes} tokens "
          f"(KV payload {kv_bytes} bytes prefill -> decode), loopback, {os.cpu_count()} CPUs")
    for name, label in (("direct", "client -> prefill, client -> decode"), ("router", "client -> router")):
        t = times[name]
        print(f"{name:>6}: p50 {pct(t, 50):.2f} ms  p95 {pct(t, 95):.2f} ms  ({label})")
    p50_r, p50_d = pct(times["router"], 50), pct(times["direct"], 50)
    goal = 1.1 * p50_d + 2.0
    print(f"ratio p50 router/direct: {p50_r / p50_d:.2f}x  difference: {p50_r - p50_d:+.2f} ms  "
          f"(goal: router p50 <= 1.1x direct + 2 ms = {goal:.2f} ms: {'met' if p50_r <= goal else 'NOT met'})")


if __name__ == "__main__":
    main()
