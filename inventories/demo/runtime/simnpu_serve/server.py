"""HTTP endpoints (OpenAI-compatible subset) and, for the decode role, the KV listener.

Roles follow vLLM's ``--kv-transfer-config`` ``kv_role``: ``kv_producer`` (prefill) computes the
prompt's KV payload and POSTs it to the decode's KV listener (``http://kv_ip:kv_port/kv/<id>``);
When the prefill request's ``kv_transfer_params`` names ``remote_host``/``remote_port`` (the
router's choice of decode, one of several), the payload goes there instead.
``kv_consumer`` (decode) runs that listener and, for a completion carrying the prefill's
``kv_transfer_params``, waits for the payload, checks its size and sha256, then answers.
Without a KV config the server does both steps itself.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from simnpu_serve import __version__
from simnpu_serve.model import LoadedModel, answer_tokens, kv_payload, prompt_tokens

ROLES = {"kv_producer": "prefill", "kv_consumer": "decode", "kv_both": "both"}
_TRANSFER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KEEP_S = 120.0  # an unclaimed KV payload is dropped after this long
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_POOLED_TARGETS = 64  # KV listeners that keep idle connections; others get one connection per push


@dataclass
class Config:
    served_name: str
    role: str  # prefill | decode | both
    max_model_len: int
    max_num_seqs: int
    tensor_parallel_size: int
    devices: str
    kv_ip: str = ""
    kv_port: int = 0
    kv_connector: str = ""
    kv_wait_s: float = 30.0
    speculative: dict[str, Any] = field(default_factory=dict)


class KvStore:
    """Payloads the prefill pushed, waiting for the decode request that claims them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: dict[str, tuple[bytes, float]] = {}

    def put(self, transfer_id: str, data: bytes) -> None:
        now = time.monotonic()
        with self._cond:
            for key in [k for k, (_, t) in self._items.items() if now - t > _KEEP_S]:
                del self._items[key]
            self._items[transfer_id] = (data, now)
            self._cond.notify_all()

    def take(self, transfer_id: str, wait_s: float) -> bytes | None:
        with self._cond:
            if not self._cond.wait_for(lambda: transfer_id in self._items, timeout=wait_s):
                return None
            return self._items.pop(transfer_id)[0]


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


class App:
    """Everything a request handler needs, shared by the handler threads."""

    def __init__(self, model: LoadedModel, config: Config) -> None:
        self.model = model
        self.config = config
        self.kv = KvStore()
        self.metrics = Metrics()
        self.slots = threading.BoundedSemaphore(config.max_num_seqs)
        self.created = int(time.time())
        self._pool_lock = threading.Lock()
        self._kv_idle: dict[tuple[str, int], list[http.client.HTTPConnection]] = {}

    # --- prefill side: push the KV payload to a decode's listener over pooled kept-alive connections
    def send_kv(self, transfer_id: str, data: bytes, target: tuple[str, int]) -> None:
        digest = hashlib.sha256(data).hexdigest()
        headers = {"Content-Type": "application/octet-stream", "X-Sovkit-Sha256": digest}
        host, port = target
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for attempt in (0, 1):
            with self._pool_lock:
                idle = self._kv_idle.get(target)
                conn = idle.pop() if idle and attempt == 0 else None
            reused = conn is not None
            conn = conn or _NoDelayConnection(host, port, timeout=self.config.kv_wait_s)
            try:
                conn.request("POST", f"/kv/{transfer_id}", body=data, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and isinstance(exc, (ConnectionError, http.client.BadStatusLine)):
                    continue  # the listener closed an idle kept-alive connection: one fresh try
                raise KvTransferError(f"KV transfer to {where} failed: {exc or type(exc).__name__}") from None
            with self._pool_lock:
                idle = self._kv_idle.get(target)
                if idle is None and len(self._kv_idle) < _POOLED_TARGETS:
                    idle = self._kv_idle[target] = []
                if idle is not None and len(idle) < 64:
                    idle.append(conn)
                    conn = None
            if conn is not None:
                conn.close()
            if resp.status != 200:
                raise KvTransferError(f"KV listener {where} answered {resp.status}: "
                                      f"{body[:200].decode(errors='replace')}")
            return

    def render_metrics(self) -> bytes:
        c = self.metrics.snapshot()
        m, cfg = self.model, self.config
        lines = [
            "# HELP simnpu_model_info The model this server loaded (value always 1).",
            "# TYPE simnpu_model_info gauge",
            f'simnpu_model_info{{model="{cfg.served_name}",version="{m.version}",role="{cfg.role}",'
            f'kv_dtype="{m.kv_dtype}",runtime_version="{__version__}"}} 1',
            "# HELP simnpu_kv_per_token_bytes KV cache bytes per token (2 x layers x KV heads x head dim x dtype).",
            "# TYPE simnpu_kv_per_token_bytes gauge",
            f"simnpu_kv_per_token_bytes {m.kv_per_token}",
            "# TYPE simnpu_requests_total counter",
        ]
        for key in sorted(k for k in c if k.startswith("req ")):
            _, path, status = key.split(" ")
            lines.append(f'simnpu_requests_total{{path="{path}",status="{status}"}} {c[key]}')
        for name, helptext in (
            ("prompt_tokens_total", "Prompt tokens processed."),
            ("generation_tokens_total", "Tokens generated."),
            ("kv_payloads_sent_total", "KV payloads pushed to the decode's listener (prefill)."),
            ("kv_sent_bytes_total", "KV bytes pushed to the decode's listener (prefill)."),
            ("kv_payloads_received_total", "KV payloads received on the KV listener (decode)."),
            ("kv_received_bytes_total", "KV bytes received on the KV listener (decode)."),
            ("kv_payloads_verified_total", "KV payloads a completion claimed with matching size and sha256."),
            ("kv_verified_bytes_total", "KV bytes claimed by completions after the size and sha256 check."),
            ("kv_rejected_total", "Completions refused: KV payload missing, late, or of the wrong size/digest."),
        ):
            lines += [f"# HELP simnpu_{name} {helptext}", f"# TYPE simnpu_{name} counter",
                      f"simnpu_{name} {c.get(name, 0)}"]
        return ("\n".join(lines) + "\n").encode()


class KvTransferError(Exception):
    pass


class _NoDelayConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no Nagle, each response written in one piece, no access log."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = f"simnpu-serve/{__version__}"
    app: App

    def log_message(self, format: str, *args: Any) -> None:
        return

    def send_body(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        reason = self.responses.get(status, ("",))[0]
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"Server: {self.server_version}\r\n\r\n")
        self.wfile.write(head.encode("latin-1") + body)
        self.app.metrics.add(f"req {_path_label(self.path)} {status}")

    def send_json(self, status: int, doc: Any) -> None:
        self.send_body(status, json.dumps(doc).encode())

    def send_error_json(self, err: ApiError) -> None:
        self.send_json(err.status, {"error": {"message": err.message, "type": err.kind, "code": err.status}})

    def read_body(self, limit: int) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
        if length < 0 or length > limit:
            self.close_connection = True
            raise ApiError(413, f"request body over {limit} bytes")
        return self.rfile.read(length)


class ApiHandler(_Handler):
    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        app, cfg = self.app, self.app.config
        if path == "/health":
            self.send_json(200, {"status": "ok", "role": cfg.role, "model": cfg.served_name,
                                 "version": app.model.version, "devices": cfg.devices,
                                 "tensor_parallel_size": cfg.tensor_parallel_size,
                                 "speculative": cfg.speculative or None})
        elif path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{
                "id": cfg.served_name, "object": "model", "created": app.created, "owned_by": "sovkit-demo",
                "root": str(app.model.root), "parent": None, "max_model_len": cfg.max_model_len,
                "sovkit_model_version": app.model.version}]})
        elif path == "/metrics":
            self.send_body(200, app.render_metrics(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            self.send_error_json(ApiError(404, f"no route {path}", "not_found"))

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        try:
            if path != "/v1/completions":
                self.read_body(1 << 20)
                raise ApiError(404, f"no route {path}", "not_found")
            self.completion(self.read_body(1 << 22))
        except ApiError as err:
            self.send_error_json(err)

    def completion(self, raw: bytes) -> None:
        app, cfg = self.app, self.app.config
        try:
            req = json.loads(raw)
        except ValueError:
            raise ApiError(400, "request body is not JSON") from None
        if not isinstance(req, dict):
            raise ApiError(400, "request body must be a JSON object")
        if req.get("model", cfg.served_name) != cfg.served_name:
            raise ApiError(404, f"The model `{req.get('model')}` does not exist.", "not_found")
        prompt = req.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise ApiError(400, "prompt must be a string")
        max_tokens = req.get("max_tokens", 16)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ApiError(400, "max_tokens must be an integer >= 1")
        n_prompt = prompt_tokens(prompt)
        if n_prompt + max_tokens > cfg.max_model_len:
            raise ApiError(400, f"This model's maximum context length is {cfg.max_model_len} tokens; the request "
                                f"has {n_prompt} prompt tokens and asks for {max_tokens} more.")
        params = req.get("kv_transfer_params")
        params = params if isinstance(params, dict) else {}
        out_params: dict[str, Any] | None = None
        with app.slots:
            if cfg.role == "prefill" and params.get("do_remote_decode"):
                out_params = self.prefill(prompt, kv_target(params, (cfg.kv_ip, cfg.kv_port)))
                max_tokens = 1
            elif cfg.role == "decode" and params.get("transfer_id"):
                self.claim_kv(prompt, params)
            tokens = answer_tokens(app.model, cfg.served_name, prompt)
        finish = "length" if max_tokens < len(tokens) else "stop"
        tokens = tokens[:max_tokens]
        app.metrics.add("prompt_tokens_total", n_prompt)
        app.metrics.add("generation_tokens_total", len(tokens))
        cid = f"cmpl-{uuid.uuid4().hex}"
        if req.get("stream"):
            self.stream(cid, tokens, finish)
            return
        doc: dict[str, Any] = {
            "id": cid, "object": "text_completion", "created": int(time.time()), "model": cfg.served_name,
            "choices": [{"index": 0, "text": "".join(tokens), "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(tokens),
                      "total_tokens": n_prompt + len(tokens)}}
        if out_params is not None:
            doc["kv_transfer_params"] = out_params
        self.send_json(200, doc)

    def prefill(self, prompt: str, target: tuple[str, int]) -> dict[str, Any]:
        app, cfg = self.app, self.app.config
        data = kv_payload(app.model, prompt)
        transfer_id = uuid.uuid4().hex
        try:
            app.send_kv(transfer_id, data, target)
        except KvTransferError as exc:
            raise ApiError(502, str(exc), "kv_transfer_error") from None
        app.metrics.add("kv_payloads_sent_total")
        app.metrics.add("kv_sent_bytes_total", len(data))
        return {"do_remote_decode": False, "do_remote_prefill": True, "transfer_id": transfer_id,
                "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "remote_host": target[0],
                "remote_port": target[1], "kv_connector": cfg.kv_connector}

    def claim_kv(self, prompt: str, params: dict[str, Any]) -> None:
        app = self.app
        transfer_id = str(params["transfer_id"])
        if not _TRANSFER_ID.match(transfer_id):
            raise ApiError(400, "kv_transfer_params.transfer_id is malformed")
        data = app.kv.take(transfer_id, app.config.kv_wait_s)
        expected = app.model.kv_per_token * prompt_tokens(prompt)
        problem = None
        if data is None:
            problem = f"KV payload {transfer_id} did not arrive within {app.config.kv_wait_s:g} s"
        elif len(data) != expected or params.get("bytes") != expected:
            problem = (f"KV payload {transfer_id} has {len(data)} bytes (prefill said {params.get('bytes')}); "
                       f"this prompt needs {expected}")
        elif hashlib.sha256(data).hexdigest() != params.get("sha256"):
            problem = f"KV payload {transfer_id} sha256 differs from the prefill's"
        if problem:
            app.metrics.add("kv_rejected_total")
            raise ApiError(504 if data is None else 400, problem, "kv_transfer_error")
        app.metrics.add("kv_payloads_verified_total")
        app.metrics.add("kv_verified_bytes_total", expected)

    def stream(self, cid: str, tokens: list[str], finish: str) -> None:
        """Server-sent events, chunked transfer encoding (keeps the connection alive), ending data: [DONE]."""
        created, model = int(time.time()), self.app.config.served_name
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                         b"Transfer-Encoding: chunked\r\nServer: " + self.server_version.encode() + b"\r\n\r\n")
        for i, tok in enumerate(tokens):
            last = i == len(tokens) - 1
            event = {"id": cid, "object": "text_completion", "created": created, "model": model,
                     "choices": [{"index": 0, "text": tok, "logprobs": None,
                                  "finish_reason": finish if last else None}]}
            _chunk(self.wfile, b"data: " + json.dumps(event).encode() + b"\n\n")
        _chunk(self.wfile, b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.app.metrics.add("req /v1/completions 200")


def kv_target(params: dict[str, Any], default: tuple[str, int]) -> tuple[str, int]:
    """Where the prefill pushes the KV payload: the request's remote_host/remote_port, else the configured peer.

    The host must be an IP address or a plain host name and the port 1-65535 (400 otherwise): it
    comes from a request, so nothing else (no URL, no path, no credentials) gets through.
    """
    host, port = params.get("remote_host"), params.get("remote_port")
    if host is None and port is None:
        return default
    if host is None or port is None:
        raise ApiError(400, "kv_transfer_params needs both remote_host and remote_port, or neither")
    if not isinstance(host, str) or not (_is_ip(host) or _HOSTNAME.match(host)):
        raise ApiError(400, "kv_transfer_params.remote_host must be an IP address or a host name")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ApiError(400, "kv_transfer_params.remote_port must be a port number (1-65535)")
    return host, port


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _path_label(path: str) -> str:
    path = path.split("?")[0]
    if path.startswith("/kv/"):
        return "/kv"
    return path if path in ("/health", "/v1/models", "/v1/completions", "/metrics") else "other"


def _chunk(wfile: Any, data: bytes) -> None:
    wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


class KvHandler(_Handler):
    """The decode's KV listener: ``POST /kv/<transfer_id>`` with the payload as the body."""

    def do_POST(self) -> None:
        app = self.app
        m = re.fullmatch(r"/kv/([A-Za-z0-9_-]{1,64})", self.path)
        try:
            data = self.read_body(app.model.kv_per_token * app.config.max_model_len)
            if m is None:
                raise ApiError(404, "KV listener takes POST /kv/<transfer_id>", "not_found")
            digest = self.headers.get("X-Sovkit-Sha256")
            if digest is not None and digest != hashlib.sha256(data).hexdigest():
                raise ApiError(400, "payload sha256 differs from the X-Sovkit-Sha256 header")
        except ApiError as err:
            self.send_error_json(err)
            return
        app.kv.put(m.group(1), data)
        app.metrics.add("kv_payloads_received_total")
        app.metrics.add("kv_received_bytes_total", len(data))
        self.send_json(200, {"transfer_id": m.group(1), "bytes": len(data)})

    def do_GET(self) -> None:
        self.send_error_json(ApiError(404, "KV listener takes POST /kv/<transfer_id>", "not_found"))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def make_servers(app: App, host: str, port: int) -> list[Server]:
    """The API server and, for the decode role, the KV listener on ``kv_port`` (same bind address)."""
    api = type("BoundApiHandler", (ApiHandler,), {"app": app})
    servers = []
    if app.config.role == "decode":
        kv = type("BoundKvHandler", (KvHandler,), {"app": app})
        servers.append(Server((host, app.config.kv_port), kv))
    servers.append(Server((host, port), api))
    return servers
