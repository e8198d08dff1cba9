"""sovkit's prefill/decode router: one OpenAI-compatible endpoint in front of prefill and decode servers.

    python router.py --host H --port P --prefill URL [--prefill URL ...] --decode URL [--decode URL ...]
                     [--decode-kv HOST:PORT ...] [--timeout S]

Standard library only; sovkit copies this file to the router host. The protocol is the one of
vLLM's NIXL toy proxy (tests/v1/kv_connector/nixl_integration/toy_proxy_server.py) [V]: each
completion goes first to prefill with ``max_tokens: 1``, ``stream: false`` and
``kv_transfer_params: {"do_remote_decode": true}``; the prefill's answer carries the
``kv_transfer_params`` that tell decode where its KV cache is; the original request then goes to
decode with those params, and decode's answer (a stream too) is passed through unchanged.

Several prefills and decodes (xPyD, like the toy proxy's several --prefiller-hosts/--decoder-hosts [V]):
each request picks a prefill and a decode round-robin, independently. ``--decode-kv`` (one per
--decode, same order) names each decode's KV listener; the prefill request then carries it as
``kv_transfer_params.remote_host/remote_port``, so a pushing prefill (sovkit's demo runtime) sends
the KV cache to the decode that will answer. When that push fails (the prefill answers 502
``kv_transfer_error``), nothing reached a decode, and the request is tried once more on the next decode.

Latency: a pool of kept-alive HTTP/1.1 connections per upstream (TCP_NODELAY), shared by the
handler threads; upstream addresses resolved once; every response written in one piece.
GET /health is 200 when at least one prefill and one decode answer /health 200 (else 503); its body
lists every upstream's status. GET /v1/models is the first healthy decode's; GET /metrics is the
router's own counters, per upstream.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import re
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

VERSION = "1.1.0"
_POOL_MAX = 64  # idle connections kept per upstream
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def parse_kv(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) of a decode's KV listener: an IP address or a plain host name."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        valid = _is_ip(host) and ":" in host
    else:
        valid = _is_ip(host) or bool(_HOSTNAME.match(host))
    if not sep or not valid or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--decode-kv must be HOST:PORT (an IP address or host name, port 1-65535), not {text!r}")
    return host, int(port)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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
    """One upstream server (prefill or decode) behind a pool of kept-alive connections.

    ``kv`` is a decode's KV listener (host, port) when the router was told it (--decode-kv).
    """

    def __init__(self, name: str, url: str, timeout: float, kv: tuple[str, int] | None = None) -> None:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme != "http" or not parts.hostname or port == -1:
            raise ValueError(f"--{name} must be an http://host:port URL, not {url!r}")
        self.name, self.url, self.timeout, self.kv = name, url.rstrip("/"), timeout, kv
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
    """The upstreams, the round-robin turns and the counters, shared by the handler threads."""

    def __init__(self, prefills: list[Upstream], decodes: list[Upstream]) -> None:
        if not prefills or not decodes:
            raise ValueError("at least one --prefill and one --decode are needed")
        self.prefills, self.decodes = prefills, decodes
        self._lock = threading.Lock()
        self._turns = {"prefill": 0, "decode": 0}
        self.counts: Counter[str] = Counter()
        self.seconds = 0.0

    def pick(self, role: str) -> Upstream:
        """The next upstream of ``role`` in round-robin order (prefill and decode turn independently)."""
        group = self.prefills if role == "prefill" else self.decodes
        with self._lock:
            turn = self._turns[role]
            self._turns[role] = turn + 1
        return group[turn % len(group)]

    def after(self, decode: Upstream) -> Upstream:
        """The decode that follows ``decode`` in the list (the one a failed request is tried on once more)."""
        return self.decodes[(self.decodes.index(decode) + 1) % len(self.decodes)]

    def count(self, key: str, seconds: float = 0.0) -> None:
        with self._lock:
            self.counts[key] += 1
            self.seconds += seconds

    def failed(self, upstream: Upstream) -> None:
        self.count(f"err {upstream.name} {upstream.url}")

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Every upstream's GET /health, asked in parallel; ok when one prefill and one decode answer 200."""
        upstreams = self.prefills + self.decodes
        states: list[int | str] = ["not checked"] * len(upstreams)

        def check(i: int) -> None:
            states[i] = upstreams[i].health(5.0)

        threads = [threading.Thread(target=check, args=(i,), daemon=True) for i in range(len(upstreams))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        doc: dict[str, Any] = {"prefill": [], "decode": []}
        for up, state in zip(upstreams, states, strict=True):
            entry: dict[str, Any] = {"url": up.url, "ok": state == 200, "status": state if isinstance(state, int)
                                     else None, "error": None if isinstance(state, int) else state}
            if up.name == "decode":
                entry["kv"] = f"{up.kv[0]}:{up.kv[1]}" if up.kv else None
            doc[up.name].append(entry)
        ok = all(any(e["ok"] for e in doc[role]) for role in ("prefill", "decode"))
        return ok, {"status": "ok" if ok else "unavailable", **doc}

    def metrics(self) -> bytes:
        with self._lock:
            counts, seconds = dict(self.counts), self.seconds
        lines = ["# HELP sovkit_router_info The router (value always 1).",
                 "# TYPE sovkit_router_info gauge",
                 f'sovkit_router_info{{version="{VERSION}"}} 1',
                 "# HELP sovkit_router_upstream_info The router's upstreams, kv = a decode's KV listener "
                 "(value always 1).",
                 "# TYPE sovkit_router_upstream_info gauge"]
        upstreams = self.prefills + self.decodes
        for up in upstreams:
            kv = f"{up.kv[0]}:{up.kv[1]}" if up.kv else ""
            lines.append(f'sovkit_router_upstream_info{{role="{up.name}",upstream="{_label(up.url)}",kv="{kv}"}} 1')
        lines += ["# HELP sovkit_router_requests_total Requests answered, by path and status.",
                  "# TYPE sovkit_router_requests_total counter"]
        for key in sorted(k for k in counts if k.startswith("req ")):
            _, path, status = key.split(" ")
            lines.append(f'sovkit_router_requests_total{{path="{path}",status="{status}"}} {counts[key]}')
        for name, helptext, prefix in (
            ("upstream_requests_total", "Completion hops sent to an upstream (retries included).", "sent"),
            ("upstream_errors_total", "Upstream connection or protocol failures, and KV pushes to a decode "
                                      "that failed.", "err"),
        ):
            lines += [f"# HELP sovkit_router_{name} {helptext}", f"# TYPE sovkit_router_{name} counter"]
            for up in upstreams:
                n = counts.get(f"{prefix} {up.name} {up.url}", 0)
                lines.append(f'sovkit_router_{name}{{role="{up.name}",upstream="{_label(up.url)}"}} {n}')
        lines += ["# HELP sovkit_router_retries_total Requests tried once more on the next decode.",
                  "# TYPE sovkit_router_retries_total counter",
                  f"sovkit_router_retries_total {counts.get('retries', 0)}",
                  "# HELP sovkit_router_completion_seconds Time from request to the end of the answer.",
                  "# TYPE sovkit_router_completion_seconds summary",
                  f"sovkit_router_completion_seconds_sum {seconds:.6f}",
                  f"sovkit_router_completion_seconds_count {counts.get('completions', 0)}"]
        return ("\n".join(lines) + "\n").encode()


def _label(value: str) -> str:
    """A Prometheus label value, escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _kv_push_failed(status: int, body: bytes) -> bool:
    """The prefill says it could not hand the KV cache to the decode (the demo runtime's 502 kv_transfer_error)."""
    if status != 502:
        return False
    try:
        doc = json.loads(body)
        return isinstance(doc, dict) and doc["error"]["type"] == "kv_transfer_error"
    except (ValueError, KeyError, TypeError):
        return False


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
            ok, doc = r.health()
            self.reply(200 if ok else 503, json.dumps(doc).encode())
        elif path == "/v1/models":
            self.models()
        elif path == "/metrics":
            self.reply(200, r.metrics(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            self.error(404, f"no route {path}", "not_found")

    def models(self) -> None:
        """The model list of the first decode (from the next in turn on) that answers it with 200."""
        r = self.router
        first = r.pick("decode")
        decode, problems = first, []
        for _ in r.decodes:
            try:
                status, ctype, body = decode.fetch("GET", "/v1/models")
            except UpstreamError as exc:
                r.failed(decode)
                problems.append(str(exc))
            else:
                if status == 200:
                    self.reply(status, body, ctype)
                    return
                problems.append(f"decode {decode.url}: HTTP {status}")
            decode = r.after(decode)
        self.error(502, "no decode answered /v1/models: " + "; ".join(problems))

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
        prefill, decode = r.pick("prefill"), r.pick("decode")
        for attempt in (0, 1):
            pre = dict(req, max_tokens=1, stream=False, kv_transfer_params={
                "do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                "remote_block_ids": None, "remote_host": decode.kv[0] if decode.kv else None,
                "remote_port": decode.kv[1] if decode.kv else None})
            pre.pop("stream_options", None)
            if "max_completion_tokens" in pre:
                pre["max_completion_tokens"] = 1
            r.count(f"sent prefill {prefill.url}")
            try:
                status, ctype, body = prefill.fetch("POST", "/v1/completions", json.dumps(pre).encode(), headers)
            except UpstreamError as exc:
                r.failed(prefill)
                self.error(502, str(exc))
                return
            if decode.kv and _kv_push_failed(status, body):
                r.failed(decode)  # its KV listener could not be reached: nothing was handed to it
                if attempt == 0 and len(r.decodes) > 1:
                    r.count("retries")
                    decode = r.after(decode)
                    continue
            break
        if status != 200:  # the prefill refused the request (bad model, too long, ...): its answer stands
            self.reply(status, body, ctype)
            return
        try:
            params = json.loads(body).get("kv_transfer_params")
        except (ValueError, AttributeError):
            params = None
        if not isinstance(params, dict):
            r.failed(prefill)
            self.error(502, f"prefill {prefill.url} returned no kv_transfer_params")
            return
        dec = json.dumps(dict(req, kv_transfer_params=params)).encode()
        r.count(f"sent decode {decode.url}")
        if not req.get("stream"):
            try:
                status, ctype, body = decode.fetch("POST", "/v1/completions", dec, headers)
            except UpstreamError as exc:
                r.failed(decode)
                self.error(502, str(exc))
                return
            self.reply(status, body, ctype)
            return
        try:
            conn, resp = decode.send("POST", "/v1/completions", dec, headers)
        except UpstreamError as exc:
            r.failed(decode)
            self.error(502, str(exc))
            return
        if not resp.getheader("Content-Type", "").startswith("text/event-stream"):  # an error answer
            try:
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                decode.discard(conn)
                r.failed(decode)
                self.error(502, f"decode {decode.url}: {exc or type(exc).__name__}")
                return
            decode.release(conn)
            self.reply(resp.status, body, resp.getheader("Content-Type", "application/json"))
            return
        self.stream(decode, conn, resp)

    def stream(self, decode: Upstream, conn: _Conn, resp: http.client.HTTPResponse) -> None:
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
            decode.discard(conn)
            self.router.failed(decode)
            self.close_connection = True
            return
        decode.release(conn)
        self.router.count(f"req /v1/completions {resp.status}")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def build(args: argparse.Namespace) -> Router:
    """The router from the parsed flags; ValueError says which flag is wrong."""
    kvs = [parse_kv(text) for text in args.decode_kv or []]
    if kvs and len(kvs) != len(args.decode):
        raise ValueError(f"--decode-kv must be given once per --decode, in the same order "
                         f"({len(args.decode)} --decode, {len(kvs)} --decode-kv)")
    prefills = [Upstream("prefill", url, args.timeout) for url in args.prefill]
    decodes = [Upstream("decode", url, args.timeout, kvs[i] if kvs else None) for i, url in enumerate(args.decode)]
    for role, group in (("prefill", prefills), ("decode", decodes)):
        urls = [up.url for up in group]
        if len(set(urls)) != len(urls):
            raise ValueError(f"--{role} lists the same URL twice")
    return Router(prefills, decodes)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="router.py", description="sovkit prefill/decode router")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--prefill", action="append", required=True,
                   help="prefill server base URL, http://host:port (repeat for several)")
    p.add_argument("--decode", action="append", required=True,
                   help="decode server base URL, http://host:port (repeat for several)")
    p.add_argument("--decode-kv", action="append", default=None, metavar="HOST:PORT",
                   help="KV listener of a decode, once per --decode in the same order; sent to the prefill "
                        "as kv_transfer_params.remote_host/remote_port")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait on an upstream socket")
    args = p.parse_args(argv)
    try:
        router = build(args)
    except ValueError as exc:
        print(f"router: {exc}", file=sys.stderr)
        return 2
    handler = type("BoundHandler", (Handler,), {"router": router})
    try:
        server = Server((args.host, args.port), handler)
    except OSError as exc:
        print(f"router: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"router {VERSION}: http://{args.host}:{args.port} -> prefill "
          f"{', '.join(up.url for up in router.prefills)}; decode "
          f"{', '.join(up.url + (f' (KV {up.kv[0]}:{up.kv[1]})' if up.kv else '') for up in router.decodes)}",
          file=sys.stderr, flush=True)

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
