"""sovkit's prefill/decode router: one OpenAI-compatible endpoint in front of a prefill and a decode server.

    python router.py --host H --port P --prefill http://h:p --decode http://h:p [--timeout S]

Standard library only; sovkit copies this file to the router host. The protocol is the one of
vLLM's NIXL toy proxy (tests/v1/kv_connector/nixl_integration/toy_proxy_server.py) [V]: each
completion goes first to prefill with ``max_tokens: 1``, ``stream: false`` and
``kv_transfer_params: {"do_remote_decode": true}``; the prefill's answer carries the
``kv_transfer_params`` that tell decode where its KV cache is; the original request then goes to
decode with those params, and decode's answer (a stream too) is passed through unchanged.

Latency: a pool of kept-alive HTTP/1.1 connections per upstream (TCP_NODELAY), shared by the
handler threads; upstream addresses resolved once; every response written in one piece.
GET /health is 200 only when both upstreams' /health are 200 (else 503, saying which is not);
GET /v1/models is decode's; GET /metrics is the router's own counters.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

VERSION = "1.0.0"
_POOL_MAX = 64  # idle connections kept per upstream


class UpstreamError(Exception):
    pass


class _Conn(http.client.HTTPConnection):
    """An HTTP/1.1 connection to an address resolved once, with Nagle off."""

    def __init__(self, upstream: Upstream, timeout: float) -> None:
        super().__init__(upstream.host, upstream.port, timeout=timeout)
        self.upstream = upstream

    def connect(self) -> None:
        family, sockaddr = self.upstream.address()
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.timeout)
            sock.connect(sockaddr)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Upstream:
    """One upstream server (prefill or decode) behind a pool of kept-alive connections."""

    def __init__(self, name: str, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--{name} must be an http://host:port URL, not {url!r}")
        self.name, self.url, self.timeout = name, url.rstrip("/"), timeout
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self._resolved: tuple[int, Any] | None = None
        self._lock = threading.Lock()
        self._idle: list[_Conn] = []

    def address(self) -> tuple[int, Any]:
        """(family, sockaddr), looked up on first use and then kept: no DNS on the request path."""
        with self._lock:
            if self._resolved is None:
                family, _, _, _, sockaddr = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0]
                self._resolved = (family, sockaddr)
            return self._resolved

    def send(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[_Conn, http.client.HTTPResponse]:
        """Send on an idle pooled connection (or a new one); retry once on a new one if a pooled one was stale.

        The caller reads the response to its end and then calls ``release`` (or ``discard`` on an error).
        """
        for attempt in (0, 1):
            with self._lock:
                conn = self._idle.pop() if self._idle and attempt == 0 else None
            reused = conn is not None
            conn = conn or _Conn(self, self.timeout)
            try:
                conn.request(method, self.prefix + path, body=body, headers=headers or {})
                return conn, conn.getresponse()
            except (ConnectionError, http.client.BadStatusLine) as exc:
                conn.close()
                if reused:
                    continue  # the server closed an idle connection between our requests
                raise UpstreamError(f"{self.name} {self.url}: {exc or type(exc).__name__}") from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise UpstreamError(f"{self.name} {self.url}: {exc or type(exc).__name__}") from None
        raise AssertionError("unreachable")

    def release(self, conn: _Conn) -> None:
        with self._lock:
            if len(self._idle) < _POOL_MAX:
                self._idle.append(conn)
                return
        conn.close()

    def discard(self, conn: _Conn | None) -> None:
        if conn is not None:
            conn.close()

    def fetch(self, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        """(status, content type, body) of a whole response; the connection goes back to the pool."""
        conn, resp = self.send(method, path, body, headers)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise UpstreamError(f"{self.name} {self.url}: {exc or type(exc).__name__}") from None
        self.release(conn)
        return resp.status, resp.getheader("Content-Type", "application/json"), data

    def health(self, timeout: float) -> int | str:
        """Status of GET /health on a short-lived connection (a health check must not hang on a slow one)."""
        conn = _Conn(self, timeout)
        try:
            conn.request("GET", self.prefix + "/health")
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException) as exc:
            return str(exc) or type(exc).__name__
        finally:
            conn.close()


class Router:
    def __init__(self, prefill: Upstream, decode: Upstream) -> None:
        self.prefill, self.decode = prefill, decode
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.seconds = 0.0

    def count(self, key: str, seconds: float = 0.0) -> None:
        with self._lock:
            self.counts[key] += 1
            self.seconds += seconds

    def metrics(self) -> bytes:
        with self._lock:
            counts, seconds = dict(self.counts), self.seconds
        lines = ["# HELP sovkit_router_info The router and its upstreams (value always 1).",
                 "# TYPE sovkit_router_info gauge",
                 f'sovkit_router_info{{version="{VERSION}",prefill="{self.prefill.url}",'
                 f'decode="{self.decode.url}"}} 1',
                 "# HELP sovkit_router_requests_total Requests answered, by path and status.",
                 "# TYPE sovkit_router_requests_total counter"]
        for key in sorted(k for k in counts if k.startswith("req ")):
            _, path, status = key.split(" ")
            lines.append(f'sovkit_router_requests_total{{path="{path}",status="{status}"}} {counts[key]}')
        lines += ["# HELP sovkit_router_upstream_errors_total Upstream connection or protocol failures.",
                  "# TYPE sovkit_router_upstream_errors_total counter"]
        for name in ("prefill", "decode"):
            lines.append(f'sovkit_router_upstream_errors_total{{upstream="{name}"}} {counts.get("err " + name, 0)}')
        lines += ["# HELP sovkit_router_completion_seconds Time from request to the end of the answer.",
                  "# TYPE sovkit_router_completion_seconds summary",
                  f"sovkit_router_completion_seconds_sum {seconds:.6f}",
                  f"sovkit_router_completion_seconds_count {counts.get('completions', 0)}"]
        return ("\n".join(lines) + "\n").encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = f"sovkit-router/{VERSION}"
    router: Router

    def log_message(self, format: str, *args: Any) -> None:
        return

    def reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        reason = self.responses.get(status, ("",))[0]
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"Server: {self.server_version}\r\n\r\n")
        self.wfile.write(head.encode("latin-1") + body)
        path = self.path.split("?")[0]
        known = path in ("/health", "/v1/models", "/v1/completions", "/metrics")
        self.router.count(f"req {path if known else 'other'} {status}")

    def error(self, status: int, message: str, kind: str = "router_error") -> None:
        self.reply(status, json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode())

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        r = self.router
        if path == "/health":
            states = {"prefill": r.prefill.health(5.0), "decode": r.decode.health(5.0)}
            ok = all(s == 200 for s in states.values())
            self.reply(200 if ok else 503, json.dumps({"status": "ok" if ok else "unavailable", **states}).encode())
        elif path == "/v1/models":
            try:
                status, ctype, body = r.decode.fetch("GET", "/v1/models")
            except UpstreamError as exc:
                r.count("err decode")
                self.error(502, str(exc))
                return
            self.reply(status, body, ctype)
        elif path == "/metrics":
            self.reply(200, r.metrics(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            self.error(404, f"no route {path}", "not_found")

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= 1 << 22:
            self.close_connection = True
            self.error(413 if length > 0 else 400, "bad or over-long request body")
            return
        raw = self.rfile.read(length)
        if path != "/v1/completions":
            self.error(404, f"no route {path}", "not_found")
            return
        started = time.perf_counter()
        self.completion(raw)
        self.router.count("completions", time.perf_counter() - started)

    def completion(self, raw: bytes) -> None:
        r = self.router
        try:
            req = json.loads(raw)
        except ValueError:
            req = None
        if not isinstance(req, dict):
            self.error(400, "request body must be a JSON object", "invalid_request_error")
            return
        headers = {"Content-Type": "application/json", "X-Request-Id": uuid.uuid4().hex}
        pre = dict(req, max_tokens=1, stream=False, kv_transfer_params={
            "do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
            "remote_block_ids": None, "remote_host": None, "remote_port": None})
        pre.pop("stream_options", None)
        if "max_completion_tokens" in pre:
            pre["max_completion_tokens"] = 1
        try:
            status, ctype, body = r.prefill.fetch("POST", "/v1/completions", json.dumps(pre).encode(), headers)
        except UpstreamError as exc:
            r.count("err prefill")
            self.error(502, str(exc))
            return
        if status != 200:  # the prefill refused the request (bad model, too long, ...): its answer stands
            self.reply(status, body, ctype)
            return
        try:
            params = json.loads(body).get("kv_transfer_params")
        except (ValueError, AttributeError):
            params = None
        if not isinstance(params, dict):
            r.count("err prefill")
            self.error(502, f"prefill {r.prefill.url} returned no kv_transfer_params")
            return
        dec = json.dumps(dict(req, kv_transfer_params=params)).encode()
        if not req.get("stream"):
            try:
                status, ctype, body = r.decode.fetch("POST", "/v1/completions", dec, headers)
            except UpstreamError as exc:
                r.count("err decode")
                self.error(502, str(exc))
                return
            self.reply(status, body, ctype)
            return
        try:
            conn, resp = r.decode.send("POST", "/v1/completions", dec, headers)
        except UpstreamError as exc:
            r.count("err decode")
            self.error(502, str(exc))
            return
        if not resp.getheader("Content-Type", "").startswith("text/event-stream"):  # an error answer
            try:
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                r.decode.discard(conn)
                r.count("err decode")
                self.error(502, f"decode {r.decode.url}: {exc or type(exc).__name__}")
                return
            r.decode.release(conn)
            self.reply(resp.status, body, resp.getheader("Content-Type", "application/json"))
            return
        self.stream(conn, resp)

    def stream(self, conn: _Conn, resp: http.client.HTTPResponse) -> None:
        """Pass decode's event stream through as it arrives, re-chunked for our client."""
        head = (f"HTTP/1.1 {resp.status} {resp.reason}\r\nContent-Type: {resp.getheader('Content-Type')}\r\n"
                f"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nServer: {self.server_version}\r\n\r\n")
        try:
            self.wfile.write(head.encode("latin-1"))
            while True:
                data = resp.read1(65536)
                if not data:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
        except (OSError, http.client.HTTPException):
            # the client hung up or decode failed mid-stream: the response is already started, so the
            # only honest signal left is to end both connections without the closing chunk
            self.router.decode.discard(conn)
            self.router.count("err decode")
            self.close_connection = True
            return
        self.router.decode.release(conn)
        self.router.count(f"req /v1/completions {resp.status}")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="router.py", description="sovkit prefill/decode router")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--prefill", required=True, help="prefill server base URL, http://host:port")
    p.add_argument("--decode", required=True, help="decode server base URL, http://host:port")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait on an upstream socket")
    args = p.parse_args(argv)
    try:
        router = Router(Upstream("prefill", args.prefill, args.timeout), Upstream("decode", args.decode, args.timeout))
    except ValueError as exc:
        print(f"router: {exc}", file=sys.stderr)
        return 2
    handler = type("BoundHandler", (Handler,), {"router": router})
    try:
        server = Server((args.host, args.port), handler)
    except OSError as exc:
        print(f"router: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"router {VERSION}: http://{args.host}:{args.port} -> prefill {router.prefill.url}, "
          f"decode {router.decode.url}", file=sys.stderr, flush=True)
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
