"""The demo runtime, the P/D router and the serving probe as real processes talking real HTTP on loopback.

Decode (kv_consumer), prefill (kv_producer) and the router run from their source files on a model
directory laid out as sovkit's model role leaves it (files + ``.sovkit-signature`` + ``current``).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

RUNTIME_SRC = ROOT / "inventories/demo/runtime"
ROUTER = ROOT / "templates/serving/router.py"
PROBE = (ROOT / "templates/ansible/helpers/serving_probe.py").read_text(encoding="utf-8")
ARTIFACTS = ROOT / "inventories/demo/artifacts"
MODEL_SRC = ARTIFACTS / "models/demo-ko-chat/1.0"
WHEEL = "runtime/simnpu_serve-1.0.0-py3-none-any.whl"
NAME = "demo-ko-chat"
ENV = {**os.environ, "PYTHONPATH": str(RUNTIME_SRC), "PYTHONDONTWRITEBYTECODE": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_dir(tmp: Path) -> Path:
    """``models/demo-ko-chat/{1.0/..., current -> 1.0}`` with the signature where the model role keeps it."""
    base = tmp / "models" / NAME
    (base / "1.0").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(MODEL_SRC / name, base / "1.0" / name)
    shutil.copy(MODEL_SRC / "model.sig", base / "1.0" / ".sovkit-signature")
    (base / "current").symlink_to("1.0")
    return base / "current"


def kv_per_token_from_config() -> int:
    """The issue's formula, computed here independently of the runtime: 2 x layers x KV heads x head dim x 2 (bf16)."""
    c = json.loads((MODEL_SRC / "config.json").read_text())
    heads = c["num_attention_heads"]
    assert c["torch_dtype"] == "bfloat16"
    return int(2 * c["num_hidden_layers"] * c.get("num_key_value_heads", heads) * (c["hidden_size"] // heads) * 2)


def request(base_port: int, method: str, path: str, body: Any = None,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, str, bytes]:
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", base_port, timeout=20)
    try:
        c.request(method, path, body=None if body is None else json.dumps(body).encode(),
                  headers={"Content-Type": "application/json"})
        resp = c.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        if own:
            c.close()


def metric(port: int, name: str) -> float:
    status, _, body = request(port, "GET", "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.split(" ")[0] == name:
            return float(line.split(" ")[1])
    raise AssertionError(f"{name} not in /metrics of :{port}")


def probe(*args: str | float) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True,
                          timeout=60, env=ENV)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    result: dict[str, Any] = json.loads(lines[0])
    return result


@dataclass
class Pd:
    decode: int
    prefill: int
    router: int
    kv: int
    procs: dict[str, subprocess.Popen[bytes]]
    decode_argv: list[str]


class Procs:
    """Starts real processes and always ends them (the fixture's teardown)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, label: str, argv: list[str], ready_port: int | None) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{label}.log").open("wb")
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=ENV)
        log.close()
        self.running.append(proc)
        if ready_port is not None:
            self.wait_health(label, proc, ready_port)
        return proc

    def wait_health(self, label: str, proc: subprocess.Popen[bytes], port: int) -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise AssertionError(f"{label} exited {proc.returncode}: {(self.tmp / f'{label}.log').read_text()}")
            try:
                if request(port, "GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{label} not healthy on :{port} within 30 s")

    def stop_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.running:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def serve_argv(model: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "simnpu_serve", "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
            "--served-model-name", NAME, "--tensor-parallel-size", "2", "--max-model-len", "4096",
            "--max-num-seqs", "8", "--devices", "npu:0,npu:1", *extra]


def kv_config(role: str, rank: int, kv_port: int) -> str:
    return json.dumps({"kv_connector": "SovkitDemoConnector", "kv_role": role, "kv_rank": rank,
                       "kv_parallel_size": 2, "kv_ip": "127.0.0.1", "kv_port": kv_port})


def start_pd(procs: Procs, model: Path) -> Pd:
    d, p, r, kv = free_port(), free_port(), free_port(), free_port()
    decode = serve_argv(model, d, "--kv-transfer-config", kv_config("kv_consumer", 1, kv), "--kv-wait-s", "2")
    started = {
        "decode": procs.start("decode", decode, d),
        "prefill": procs.start("prefill", serve_argv(model, p, "--kv-transfer-config",
                                                     kv_config("kv_producer", 0, kv)), p),
    }
    started["router"] = procs.start("router", [sys.executable, str(ROUTER), "--host", "127.0.0.1", "--port", str(r),
                                               "--prefill", f"http://localhost:{p}",
                                               "--decode", f"http://127.0.0.1:{d}"], r)
    return Pd(d, p, r, kv, started, decode)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    running = Procs(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


@pytest.fixture(scope="module")
def pd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pd]:
    """One decode + prefill + router set shared by the read-mostly tests of this module."""
    tmp = tmp_path_factory.mktemp("pd")
    running = Procs(tmp)
    try:
        yield start_pd(running, model_dir(tmp))
    finally:
        running.stop_all()


def test_completion_through_the_router_moves_a_kv_payload_of_the_model_size(pd: Pd) -> None:
    prompt = "안녕하세요, sovkit"  # 22 UTF-8 bytes = 22 byte-level tokens
    expected = kv_per_token_from_config() * len(prompt.encode())
    before = {port: (metric(port, "simnpu_kv_verified_bytes_total"), metric(port, "simnpu_kv_sent_bytes_total"))
              for port in (pd.decode, pd.prefill)}
    status, _, body = request(pd.router, "POST", "/v1/completions", {"model": NAME, "prompt": prompt,
                                                                     "max_tokens": 64})
    assert status == 200, body
    doc = json.loads(body)
    assert "version 1.0" in doc["choices"][0]["text"] and doc["choices"][0]["finish_reason"] == "stop"
    assert doc["usage"]["prompt_tokens"] == len(prompt.encode())
    assert metric(pd.decode, "simnpu_kv_per_token_bytes") == kv_per_token_from_config() == 512
    # the decode claimed exactly one payload of the formula's size; the prefill sent it
    assert metric(pd.decode, "simnpu_kv_verified_bytes_total") - before[pd.decode][0] == expected
    assert metric(pd.prefill, "simnpu_kv_sent_bytes_total") - before[pd.prefill][1] == expected
    assert metric(pd.decode, "simnpu_kv_sent_bytes_total") == 0  # decode never plays prefill


def test_the_prefill_hop_alone_returns_one_token_and_the_transfer_params(pd: Pd) -> None:
    status, _, body = request(pd.prefill, "POST", "/v1/completions", {
        "model": NAME, "prompt": "abc", "max_tokens": 50, "kv_transfer_params": {"do_remote_decode": True}})
    doc = json.loads(body)
    params = doc["kv_transfer_params"]
    assert status == 200 and doc["usage"]["completion_tokens"] == 1
    assert params["bytes"] == 3 * kv_per_token_from_config() and params["remote_port"] == pd.kv
    assert len(params["sha256"]) == 64 and params["do_remote_prefill"] is True


def test_streaming_through_the_router_is_sse_ending_done_on_a_kept_alive_connection(pd: Pd) -> None:
    prompt = {"model": NAME, "prompt": "stream me", "max_tokens": 64}
    _, _, plain = request(pd.router, "POST", "/v1/completions", prompt)
    conn = http.client.HTTPConnection("127.0.0.1", pd.router, timeout=20)
    try:
        for _ in range(2):  # twice on one connection: the chunked framing ends each answer cleanly
            status, ctype, body = request(pd.router, "POST", "/v1/completions", {**prompt, "stream": True}, conn)
            assert status == 200 and ctype.startswith("text/event-stream")
            events = [line[len("data: "):] for line in body.decode().split("\n\n") if line.startswith("data: ")]
            assert events[-1] == "[DONE]" and len(events) > 3
            pieces = [json.loads(e)["choices"][0] for e in events[:-1]]
            assert "".join(p["text"] for p in pieces) == json.loads(plain)["choices"][0]["text"]
            assert pieces[-1]["finish_reason"] == "stop" and pieces[0]["finish_reason"] is None
    finally:
        conn.close()


def test_models_reports_the_resolved_directory_and_version(pd: Pd) -> None:
    for port in (pd.router, pd.decode, pd.prefill):
        status, _, body = request(port, "GET", "/v1/models")
        (entry,) = json.loads(body)["data"]
        assert status == 200 and entry["id"] == NAME and entry["sovkit_model_version"] == "1.0"
        assert Path(entry["root"]).name == "1.0" and not Path(entry["root"]).is_symlink()


def test_probe_ready_smoke_and_models(pd: Pd) -> None:
    base = f"http://127.0.0.1:{pd.router}"
    ready = probe("ready", base, "/health", 5)
    assert ready["ok"] is True and ready["status"] == 200 and ready["error"] is None
    smoke = probe("smoke", base, NAME, 10)
    assert smoke["ok"] is True and "version 1.0" in smoke["text"] and smoke["error"] is None
    assert 0 < smoke["ttft_ms"] <= smoke["total_ms"]
    models = probe("models", base)
    assert models == {"ok": True, "models": [{"id": NAME, "root": models["models"][0]["root"], "version": "1.0"}],
                      "error": None}
    # failures are results, one JSON line, exit 0
    wrong = probe("smoke", base, "other-model", 5)
    assert wrong["ok"] is False and "404" in wrong["error"]
    closed = probe("ready", f"http://127.0.0.1:{free_port()}", "/health", 0.3)
    assert closed["ok"] is False and closed["status"] is None and "Connection refused" in closed["error"]
    assert probe("models", f"http://127.0.0.1:{free_port()}")["ok"] is False
    assert "usage" in probe("launch")["error"]
    assert probe("ready", "not-a-url", "/health", 1)["ok"] is False


def test_decode_refuses_a_missing_or_wrong_kv_payload(pd: Pd) -> None:
    rejected = metric(pd.decode, "simnpu_kv_rejected_total")
    size = 5 * kv_per_token_from_config()
    late = {"transfer_id": "never-sent", "bytes": size, "sha256": "0" * 64}
    status, _, body = request(pd.decode, "POST", "/v1/completions",
                              {"model": NAME, "prompt": "hello", "kv_transfer_params": late})
    assert status == 504 and b"did not arrive within 2 s" in body
    short = b"x" * (size - 1)  # one byte short of what a 5-token prompt needs
    kv = http.client.HTTPConnection("127.0.0.1", pd.kv, timeout=10)
    kv.request("POST", "/kv/short-one", body=short)
    assert kv.getresponse().status == 200
    kv.close()
    params = {"transfer_id": "short-one", "bytes": len(short), "sha256": hashlib.sha256(short).hexdigest()}
    status, _, body = request(pd.decode, "POST", "/v1/completions",
                              {"model": NAME, "prompt": "hello", "kv_transfer_params": params})
    assert status == 400 and b"this prompt needs 2560" in body
    assert metric(pd.decode, "simnpu_kv_rejected_total") == rejected + 2


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: (d / "model.safetensors").write_bytes(b"tampered"), "model file model.safetensors: sha256 "),
    (lambda d: (d / "tokenizer.json").unlink(), "model file tokenizer.json listed in the signed manifest is missing"),
    (lambda d: (d / ".sovkit-signature").unlink(), "no signed manifest at"),
])
def test_a_tampered_model_makes_the_server_refuse_to_start(tmp_path: Path, damage: Callable[[Path], object],
                                                           message: str) -> None:
    model = model_dir(tmp_path)
    damage(model.resolve())
    done = subprocess.run(serve_argv(model, free_port()), capture_output=True, text=True, timeout=30, env=ENV)
    assert done.returncode != 0
    (line,) = done.stderr.splitlines()
    assert line.startswith("simnpu-serve: refusing to start: ") and message in line, line


def test_manifest_flag_takes_a_copy_of_the_dsse_signature(tmp_path: Path, procs: Procs) -> None:
    """--manifest PATH checks against a signature kept elsewhere; the subjects are the store paths."""
    model = model_dir(tmp_path)
    moved = tmp_path / "model.sig"
    (model / ".sovkit-signature").rename(moved)
    statement = json.loads(base64.b64decode(json.loads(moved.read_text())["payload"]))
    assert {s["name"] for s in statement["subject"]} == {f"models/{NAME}/1.0/{n}" for n in
                                                          ("config.json", "model.safetensors", "tokenizer.json")}
    port = free_port()
    procs.start("plain", serve_argv(model, port, "--manifest", str(moved)), port)
    status, _, body = request(port, "GET", "/health")
    health = json.loads(body)
    assert status == 200 and health["role"] == "both"  # no KV config: it prefills and decodes itself
    assert health["devices"] == "npu:0,npu:1" and health["version"] == "1.0" and health["speculative"] is None
    status, _, body = request(port, "POST", "/v1/completions", {"model": NAME, "prompt": "hi", "max_tokens": 3})
    assert status == 200 and json.loads(body)["choices"][0] == {"index": 0, "text": "Hello from demo-ko-chat",
                                                                "logprobs": None, "finish_reason": "length"}


def test_an_openssf_model_signing_bundle_is_read_as_the_manifest(tmp_path: Path, procs: Procs) -> None:
    """The other signature format sovkit accepts: resources named relative to the model directory."""
    model = model_dir(tmp_path)
    files = {n: hashlib.sha256((model / n).read_bytes()).hexdigest()
             for n in ("config.json", "model.safetensors", "tokenizer.json")}

    def bundle(digests: dict[str, str]) -> str:
        statement = {"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "demo", "digest": {}}],
                     "predicateType": "https://model_signing/signature/v1.0",
                     "predicate": {"resources": [{"name": n, "algorithm": "sha256", "digest": d}
                                                 for n, d in digests.items()]}}
        payload = base64.b64encode(json.dumps(statement).encode()).decode()
        return json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                           "dsseEnvelope": {"payload": payload, "payloadType": "application/vnd.in-toto+json",
                                            "signatures": []}})

    (model / ".sovkit-signature").write_text(bundle({**files, "tokenizer.json": "0" * 64}))
    done = subprocess.run(serve_argv(model, free_port()), capture_output=True, text=True, timeout=30, env=ENV)
    assert done.returncode != 0 and "model file tokenizer.json: sha256 " in done.stderr
    (model / ".sovkit-signature").write_text(bundle(files))
    port = free_port()
    procs.start("bundle", serve_argv(model, port), port)
    assert request(port, "GET", "/health")[0] == 200


def test_router_health_is_503_when_decode_is_down_and_it_recovers_on_restart(tmp_path: Path, procs: Procs) -> None:
    own = start_pd(procs, model_dir(tmp_path))
    assert request(own.router, "GET", "/health")[0] == 200
    assert request(own.router, "POST", "/v1/completions", {"model": NAME, "prompt": "before"})[0] == 200
    own.procs["decode"].terminate()
    own.procs["decode"].wait(timeout=10)
    status, _, body = request(own.router, "GET", "/health")
    doc = json.loads(body)
    assert status == 503 and doc["status"] == "unavailable"
    assert [(e["ok"], e["status"]) for e in doc["prefill"]] == [(True, 200)]
    ((down),) = doc["decode"]
    assert down["ok"] is False and down["status"] is None and "refused" in down["error"]
    assert probe("ready", f"http://127.0.0.1:{own.router}", "/health", 0.5)["status"] == 503
    # the prefill cannot hand its KV to a decode that is gone: the router says so, it does not hang
    status, _, body = request(own.router, "POST", "/v1/completions", {"model": NAME, "prompt": "x"})
    assert status == 502 and b"KV transfer" in body
    # a restarted decode (as after a rollback) is used again: the kept-alive connections to the old one
    # (router -> decode, prefill -> KV listener) are stale, and both sides reconnect instead of failing
    procs.start("decode-again", own.decode_argv, own.decode)
    assert request(own.router, "GET", "/health")[0] == 200
    for _ in range(3):
        status, _, body = request(own.router, "POST", "/v1/completions", {"model": NAME, "prompt": "after"})
        assert status == 200 and b"version 1.0" in body


@dataclass
class Xpyd:
    prefill: int
    decodes: list[int]
    kvs: list[int]
    router: int
    procs: dict[str, subprocess.Popen[bytes]]


def start_xpyd(procs: Procs, model: Path) -> Xpyd:
    """One prefill and two decodes behind the router with --decode-kv. The prefill's own configured KV peer
    is a port nobody listens on: every payload that arrives went where the router's remote_host/port said."""
    p, r, nowhere = free_port(), free_port(), free_port()
    decodes, kvs = [free_port(), free_port()], [free_port(), free_port()]
    started: dict[str, subprocess.Popen[bytes]] = {}
    for i, (d, kv) in enumerate(zip(decodes, kvs, strict=True)):
        started[f"decode{i}"] = procs.start(f"decode{i}", serve_argv(
            model, d, "--kv-transfer-config", kv_config("kv_consumer", 1 + i, kv), "--kv-wait-s", "2"), d)
    started["prefill"] = procs.start("prefill", serve_argv(model, p, "--kv-transfer-config",
                                                           kv_config("kv_producer", 0, nowhere)), p)
    argv = [sys.executable, str(ROUTER), "--host", "127.0.0.1", "--port", str(r), "--prefill", f"http://127.0.0.1:{p}"]
    for d, kv in zip(decodes, kvs, strict=True):
        argv += ["--decode", f"http://127.0.0.1:{d}", "--decode-kv", f"127.0.0.1:{kv}"]
    started["router"] = procs.start("router", argv, r)
    return Xpyd(p, decodes, kvs, r, started)


def router_metric(port: int, name: str, upstream: str) -> float:
    status, _, body = request(port, "GET", "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and f'upstream="{upstream}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {upstream} not in the router's /metrics")


def test_one_prefill_two_decodes_round_robin_each_decode_gets_its_own_kv(tmp_path: Path, procs: Procs) -> None:
    x = start_xpyd(procs, model_dir(tmp_path))
    status, _, body = request(x.router, "GET", "/health")
    health = json.loads(body)
    assert status == 200 and [e["ok"] for e in health["decode"]] == [True, True]
    assert [e["kv"] for e in health["decode"]] == [f"127.0.0.1:{kv}" for kv in x.kvs]
    for i in range(4):
        status, _, body = request(x.router, "POST", "/v1/completions",
                                  {"model": NAME, "prompt": f"request {i}", "max_tokens": 64, "stream": i % 2 == 1})
        if i % 2:  # streamed: the events' texts joined
            events = [e[len("data: "):] for e in body.decode().split("\n\n") if e.startswith("data: ")]
            assert events[-1] == "[DONE]"
            body = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]).encode()
        assert status == 200 and b"version 1.0" in body
    size = kv_per_token_from_config() * len("request 0")
    for d in x.decodes:  # each decode received and verified two of the four payloads, none more
        assert metric(d, "simnpu_kv_payloads_received_total") == 2
        assert metric(d, "simnpu_kv_payloads_verified_total") == 2
        assert metric(d, "simnpu_kv_verified_bytes_total") == 2 * size
        assert metric(d, "simnpu_kv_rejected_total") == 0
        assert router_metric(x.router, "sovkit_router_upstream_requests_total", f"http://127.0.0.1:{d}") == 2
    assert metric(x.prefill, "simnpu_kv_payloads_sent_total") == 4
    assert router_metric(x.router, "sovkit_router_upstream_requests_total", f"http://127.0.0.1:{x.prefill}") == 4
    # the prefill hop alone says where the payload went: the decode the request named
    status, _, body = request(x.prefill, "POST", "/v1/completions", {
        "model": NAME, "prompt": "abc", "kv_transfer_params": {"do_remote_decode": True, "remote_host": "127.0.0.1",
                                                               "remote_port": x.kvs[1]}})
    params = json.loads(body)["kv_transfer_params"]
    assert status == 200 and (params["remote_host"], params["remote_port"]) == ("127.0.0.1", x.kvs[1])
    assert metric(x.decodes[1], "simnpu_kv_payloads_received_total") == 3


def test_a_decode_that_is_down_is_listed_failing_and_its_requests_go_to_the_next(tmp_path: Path,
                                                                                 procs: Procs) -> None:
    """Documented choice: the prefill cannot push to a decode that is down (502 kv_transfer_error, nothing
    was handed over), so the router tries the request once more on the next decode; clients see 200."""
    x = start_xpyd(procs, model_dir(tmp_path))
    x.procs["decode1"].terminate()
    x.procs["decode1"].wait(timeout=10)
    status, _, body = request(x.router, "GET", "/health")
    doc = json.loads(body)
    assert status == 200 and doc["status"] == "ok"
    up, down = doc["decode"]
    assert up["url"] == f"http://127.0.0.1:{x.decodes[0]}" and up["ok"] is True and up["status"] == 200
    assert down["url"] == f"http://127.0.0.1:{x.decodes[1]}" and down["ok"] is False and "refused" in down["error"]
    for i in range(4):
        status, _, body = request(x.router, "POST", "/v1/completions", {"model": NAME, "prompt": f"r{i}"})
        assert status == 200 and b"version 1.0" in body
    assert metric(x.decodes[0], "simnpu_kv_payloads_verified_total") == 4
    assert router_metric(x.router, "sovkit_router_upstream_errors_total", f"http://127.0.0.1:{x.decodes[1]}") == 2
    assert metric(x.router, "sovkit_router_retries_total") == 2
    status, _, body = request(x.router, "GET", "/v1/models")  # from the decode that answers
    assert status == 200 and json.loads(body)["data"][0]["sovkit_model_version"] == "1.0"
    # with both decodes down, nothing is healthy behind the router any more
    x.procs["decode0"].terminate()
    x.procs["decode0"].wait(timeout=10)
    assert request(x.router, "GET", "/health")[0] == 503
    status, _, body = request(x.router, "POST", "/v1/completions", {"model": NAME, "prompt": "none left"})
    assert status == 502 and b"KV transfer" in body


@pytest.mark.parametrize(("params", "message"), [
    ({"remote_host": "http://127.0.0.1", "remote_port": 1}, b"remote_host must be an IP address or a host name"),
    ({"remote_host": "evil.example/kv?x=", "remote_port": 80}, b"remote_host must be an IP address or a host name"),
    ({"remote_host": "user@host", "remote_port": 80}, b"remote_host must be an IP address or a host name"),
    ({"remote_host": 127, "remote_port": 80}, b"remote_host must be an IP address or a host name"),
    ({"remote_host": "127.0.0.1", "remote_port": 0}, b"remote_port must be a port number"),
    ({"remote_host": "127.0.0.1", "remote_port": 65536}, b"remote_port must be a port number"),
    ({"remote_host": "127.0.0.1", "remote_port": "80"}, b"remote_port must be a port number"),
    ({"remote_host": "127.0.0.1", "remote_port": None}, b"both remote_host and remote_port, or neither"),
])
def test_the_prefill_refuses_a_kv_target_that_is_not_a_host_and_port(pd: Pd, params: dict[str, Any],
                                                                      message: bytes) -> None:
    sent = metric(pd.prefill, "simnpu_kv_payloads_sent_total")
    status, _, body = request(pd.prefill, "POST", "/v1/completions", {
        "model": NAME, "prompt": "abc", "kv_transfer_params": {"do_remote_decode": True, **params}})
    assert status == 400 and message in body, body
    assert metric(pd.prefill, "simnpu_kv_payloads_sent_total") == sent


@pytest.mark.parametrize(("flags", "message"), [
    (["--decode", "http://127.0.0.1:2", "--decode-kv", "127.0.0.1:3"], "once per --decode"),
    (["--decode-kv", "127.0.0.1"], "--decode-kv must be HOST:PORT"),
    (["--decode-kv", "a/b:80"], "--decode-kv must be HOST:PORT"),
    (["--decode-kv", "127.0.0.1:0"], "--decode-kv must be HOST:PORT"),
    (["--decode", "http://127.0.0.1:1"], "--decode lists the same URL twice"),
])
def test_the_router_refuses_inconsistent_upstream_flags(flags: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, str(ROUTER), "--port", str(free_port()), "--prefill", "http://127.0.0.1:9",
                           "--decode", "http://127.0.0.1:1", *flags], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_the_committed_wheel_is_packed_from_the_runtime_source(tmp_path: Path) -> None:
    """generate.py packs runtime/simnpu_serve/*.py byte for byte, reproducibly, with a valid RECORD."""
    wheel = ARTIFACTS / WHEEL
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        sources = {n: zf.read(n) for n in names if n.startswith("simnpu_serve/")}
        record = zf.read("simnpu_serve-1.0.0.dist-info/RECORD").decode().splitlines()
        for line in record:
            path, digest, size = line.rsplit(",", 2)
            if digest:
                data = zf.read(path)
                want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert digest == f"sha256={want}" and int(size) == len(data), path
        assert {line.split(",")[0] for line in record} == set(names)
    assert sources == {f"simnpu_serve/{p.name}": p.read_bytes() for p in (RUNTIME_SRC / "simnpu_serve").glob("*.py")}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run([sys.executable, str(ROOT / "inventories/demo/generate.py"), str(tmp_path)], check=True, env=env,
                   timeout=120)
    assert (tmp_path / "artifacts" / WHEEL).read_bytes() == wheel.read_bytes()
    # pip installs it like the runtime role does, and the installed package runs
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-cache-dir",
                    "--disable-pip-version-check", "--find-links", str(wheel.parent), "--target", str(prefix),
                    "simnpu-serve==1.0.0"], check=True, capture_output=True, timeout=180)
    done = subprocess.run([sys.executable, "-m", "simnpu_serve", "--version"], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(prefix)}, timeout=30)
    assert done.stdout.strip() == "simnpu-serve 1.0.0"
