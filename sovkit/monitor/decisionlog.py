"""The policy decision of each monitor check, written to the site's decision-log sinks as OPA event lines.

The event has the shape of OPA's decision log (decision_id, path, result or error, timestamp, labels, bundles)
with the input erased (``erased: ["/input"]``, as OPA's masking does) and its digest kept in ``input_digest``,
so the log names exactly what was decided on without copying the inventory into it.

``file:///abs/path`` appends one JSON line per decision (O_APPEND, fsync) to ``path`` when it ends in
``.jsonl``, else to ``path/decision-log.jsonl``. ``http(s)://`` POSTs a gzip'd JSON array of events, as OPA's
decision-log plugin does. Any other scheme is reported as that sink's error, never silently skipped.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

from sovkit import __version__
from sovkit.errors import SovkitError
from sovkit.inventory.models import LogSink

DECISION_PATH = "sovkit/main/decision"
FILE_NAME = "decision-log.jsonl"
HTTP_TIMEOUT_S = 5.0


def decision_event(*, decision_id: str, site: str, timestamp: str, input_digest: str | None, pack_digest: str | None,
                   engine: str | None, result: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    """One OPA-shaped decision-log event (``result`` when the engine answered, ``error`` when it did not)."""
    event: dict[str, Any] = {
        "decision_id": decision_id,
        "path": DECISION_PATH,
        "erased": ["/input"],
        "input_digest": input_digest,
        "timestamp": timestamp,
        "labels": {"app": "sovkit-monitor", "version": __version__, "site": site, "engine": engine or "unknown"},
        "bundles": {"sovkit": {"revision": pack_digest or ""}},
    }
    if error is not None:
        event["error"] = {"code": "policy_error", "message": error}
    else:
        event["result"] = result
    return event


def file_target(url: str) -> Path:
    """The JSONL file a ``file://`` sink URL names (``.jsonl`` path: that file; otherwise a directory)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise SovkitError(f"decision-log sink {url!r} is not a local absolute file URL",
                          "use file:///absolute/path (a directory, or a file ending in .jsonl)")
    path = Path(unquote(parts.path))
    return path if path.suffix == ".jsonl" else path / FILE_NAME


def _append_line(path: Path, line: bytes) -> None:
    """Append to a regular file only: a symlink planted at the log's name (to /etc/shadow, say) or a FIFO is
    refused, never written through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o640)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_event(sink: LogSink, event: dict[str, Any]) -> None:
    """Deliver ``event`` to one sink; raises SovkitError naming the sink on any failure."""
    scheme = urlsplit(sink.url).scheme
    try:
        if scheme == "file":
            _append_line(file_target(sink.url), json.dumps(event, sort_keys=True).encode() + b"\n")
        elif scheme in ("http", "https"):
            body = gzip.compress(json.dumps([event], sort_keys=True).encode())
            resp = requests.post(sink.url, data=body, timeout=HTTP_TIMEOUT_S,
                                 headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
            resp.raise_for_status()
        else:
            raise SovkitError(f"decision-log sink {sink.name}: scheme {scheme or '(none)'!r} is not supported",
                              "sovkit monitor writes file:// (JSONL) and http(s):// (OPA decision-log POST) sinks")
    except OSError as exc:  # requests' errors are OSErrors too
        raise SovkitError(f"decision-log sink {sink.name} ({sink.url}): {exc}") from exc


def write_decision(sinks: list[LogSink], event: dict[str, Any]) -> dict[str, str]:
    """Write ``event`` to every sink with ``decision_log: true``: sink name -> "ok" or the error message."""
    out: dict[str, str] = {}
    for sink in sinks:
        if not sink.decision_log:
            continue
        try:
            write_event(sink, event)
            out[sink.name] = "ok"
        except SovkitError as exc:
            out[sink.name] = exc.message
    return out
