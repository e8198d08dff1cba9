"""The serving endpoints seen from the controller: `sovkit serving status` and `sovkit serving request`.

These talk HTTP from where sovkit runs to each endpoint the inventory places (``http://<host address>:<port>``),
so they need a route to the serving ports; apply's own checks do not (they run on the hosts). Timings here
include the network between the controller and the site.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from sovkit.components.host import DesiredHost
from sovkit.components.serving import DesiredServing
from sovkit.errors import SovkitError
from sovkit.state.models import State

TIMEOUT_S = 10.0


class EndpointStatus(BaseModel):
    """One serving process as `sovkit serving status` shows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str
    name: str
    role: str
    group: str | None
    endpoint: str
    healthy: bool
    model_version: str | None
    recorded_status: str
    recorded_version: str | None
    latency_ms: float | None
    error: str = ""


class Answer(BaseModel):
    """A completion sent through a unit's front (its router, or a plain deployment)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    endpoint: str
    model: str
    text: str
    ttft_ms: float
    total_ms: float
    chunks: int


@dataclass
class _Reply:
    status: int
    body: bytes
    ms: float


def _get(endpoint: str, path: str, timeout: float) -> _Reply:
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    started = time.perf_counter()
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return _Reply(resp.status, body, (time.perf_counter() - started) * 1000)
    finally:
        conn.close()


def _served_version(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
        first = doc["data"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    version = first.get("sovkit_model_version") if isinstance(first, dict) else None
    return str(version) if version is not None else None


def serving_status(desired: dict[str, DesiredHost], state: State, timeout: float = TIMEOUT_S
                   ) -> list[EndpointStatus]:
    """Probe every serving process the inventory places: readiness (timed) and the model it reports."""
    out: list[EndpointStatus] = []
    for host, d in sorted(desired.items()):
        for name, want in sorted(d.serving.items()):
            rec = state.hosts.get(host)
            recorded = rec.serving.get(name) if rec else None
            healthy, version, latency, error = False, None, None, ""
            try:
                ready = _get(want.endpoint, want.readiness_path, timeout)
                latency = round(ready.ms, 2)
                healthy = ready.status == 200
                if not healthy:
                    error = f"{want.readiness_path} answered {ready.status}"
                models = _get(want.endpoint, want.models_path, timeout)
                version = _served_version(models.body) if models.status == 200 else None
            except OSError as exc:
                error = f"no answer: {exc}"
            out.append(EndpointStatus(
                host=host, name=name, role=want.role, group=want.group, endpoint=want.endpoint, healthy=healthy,
                model_version=version, recorded_status=recorded.status if recorded else "not installed",
                recorded_version=recorded.model_version if recorded else None, latency_ms=latency, error=error))
    return out


def fronts(desired: dict[str, DesiredHost]) -> dict[str, DesiredServing]:
    """Where requests go, by unit: a group's router (by group name) or a plain deployment (by its name)."""
    out: dict[str, DesiredServing] = {}
    for d in desired.values():
        for name, want in d.serving.items():
            if want.takes_traffic:
                out.setdefault(want.group or name, want)
    return out


def send_request(desired: dict[str, DesiredHost], prompt: str, target: str | None = None, max_tokens: int = 16,
                 timeout: float = 60.0) -> Answer:
    """Stream one completion through a unit's front and time it (first token, and the whole answer)."""
    entries = fronts(desired)
    if not entries:
        raise SovkitError("the inventory places no serving endpoint", "add a deployment (and apply it)")
    if target is None:
        target = sorted(entries)[0]
    if target not in entries:
        raise SovkitError(f"no serving group or plain deployment named {target!r}",
                          f"choose one of: {', '.join(sorted(entries))}")
    want = entries[target]
    parts = urlsplit(want.endpoint)
    body = json.dumps({"model": want.served_model_name, "prompt": prompt, "max_tokens": max_tokens,
                       "stream": True}).encode()
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    started = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    chunks = 0
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise SovkitError(f"{want.endpoint} answered {resp.status}: {resp.read()[:200]!r}",
                              "see `sovkit serving status` and the service's log on the host")
        for line in resp:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            if first is None:
                first = time.perf_counter()
            chunks += 1
            text.append(_chunk_text(data))
    except OSError as exc:
        raise SovkitError(f"no answer from {want.endpoint}: {exc}",
                          "run `sovkit serving status` to see which endpoint is down, then `sovkit apply`") from exc
    finally:
        conn.close()
    done = time.perf_counter()
    if first is None:
        raise SovkitError(f"{want.endpoint} answered without a single token", "see the service's log on the host")
    return Answer(endpoint=want.endpoint, model=want.served_model_name, text="".join(text),
                  ttft_ms=round((first - started) * 1000, 2), total_ms=round((done - started) * 1000, 2),
                  chunks=chunks)


def _chunk_text(data: bytes) -> str:
    try:
        doc: Any = json.loads(data)
        return str(doc["choices"][0].get("text", ""))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""
