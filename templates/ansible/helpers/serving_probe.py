"""Probe a serving endpoint from the host it runs on; print ONE JSON line and always exit 0.

Run as ``python -c "$(cat serving_probe.py)" COMMAND ARGS...`` (standard library only):

  ready BASE PATH DEADLINE_S  -> {"ok", "status", "elapsed_ms", "error"}: polls GET BASE+PATH until 200
  smoke BASE MODEL DEADLINE_S -> {"ok", "ttft_ms", "total_ms", "text", "error"}: one streamed completion
  models BASE [DEADLINE_S]    -> {"ok", "models": [{"id", "root", "version"}], "error"}

A failure is a result (``ok: false`` with ``error``), never a traceback or an exit code, so the
caller (an Ansible task) always gets something to record.
"""

import http.client
import json
import posixpath
import sys
import time
from urllib.parse import urlsplit

SMOKE_PROMPT = "sovkit smoke test: say hello"


def _connect(base, timeout):
    parts = urlsplit(base)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"BASE must be an http://host:port URL, not {base!r}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=max(timeout, 0.05))
    return conn, parts.path.rstrip("/")


def _error(exc):
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def ready(base, path, deadline_s):
    started = time.monotonic()
    end = started + float(deadline_s)
    status, error = None, None
    while True:
        conn, prefix = _connect(base, min(5.0, max(end - time.monotonic(), 0.05)))
        try:
            conn.request("GET", prefix + path)
            resp = conn.getresponse()
            resp.read()
            status, error = resp.status, None if resp.status == 200 else f"HTTP {resp.status}"
        except (OSError, http.client.HTTPException) as exc:
            status, error = None, _error(exc)
        finally:
            conn.close()
        if status == 200 or time.monotonic() >= end:
            break
        time.sleep(min(0.2, max(end - time.monotonic(), 0)))
    return {"ok": status == 200, "status": status, "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
            "error": error}


def smoke(base, model, deadline_s):
    started = time.monotonic()
    out = {"ok": False, "ttft_ms": None, "total_ms": None, "text": "", "error": None}
    conn, prefix = _connect(base, float(deadline_s))
    body = json.dumps({"model": model, "prompt": SMOKE_PROMPT, "max_tokens": 16, "stream": True}).encode()
    try:
        conn.request("POST", prefix + "/v1/completions", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            out["error"] = f"HTTP {resp.status}: {resp.read(300).decode(errors='replace')}"
            return out
        text, done = [], False
        while time.monotonic() - started < float(deadline_s):
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            piece = "".join(c.get("text", "") for c in json.loads(data).get("choices", []))
            if piece and out["ttft_ms"] is None:
                out["ttft_ms"] = round((time.monotonic() - started) * 1000, 1)
            text.append(piece)
        out["text"] = "".join(text)
        out["total_ms"] = round((time.monotonic() - started) * 1000, 1)
        if not done:
            out["error"] = f"the stream did not end with data: [DONE] within {deadline_s} s"
        elif not out["text"]:
            out["error"] = "the answer was empty"
        else:
            out["ok"] = True
    except (OSError, http.client.HTTPException, ValueError, AttributeError) as exc:
        out["error"] = _error(exc)
    finally:
        conn.close()
    return out


def models(base, deadline_s="10"):
    conn, prefix = _connect(base, float(deadline_s))
    try:
        conn.request("GET", prefix + "/v1/models")
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            return {"ok": False, "models": [], "error": f"HTTP {resp.status}: {raw[:300].decode(errors='replace')}"}
        found = []
        for entry in json.loads(raw)["data"]:
            root = entry.get("root")
            version = entry.get("sovkit_model_version") or (posixpath.basename(root.rstrip("/")) if root else None)
            found.append({"id": entry.get("id"), "root": root, "version": version})
        return {"ok": True, "models": found, "error": None}
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError, AttributeError) as exc:
        return {"ok": False, "models": [], "error": _error(exc)}
    finally:
        conn.close()


COMMANDS = {"ready": (ready, 3, 3), "smoke": (smoke, 3, 3), "models": (models, 1, 2)}


def main(argv):
    if not argv or argv[0] not in COMMANDS:
        return {"ok": False, "error": "usage: ready BASE PATH DEADLINE_S | smoke BASE MODEL DEADLINE_S | "
                                      "models BASE [DEADLINE_S]"}
    fn, least, most = COMMANDS[argv[0]]
    args = argv[1:]
    if not least <= len(args) <= most:
        return {"ok": False, "error": f"{argv[0]} takes {least}..{most} arguments, got {len(args)}"}
    try:
        return fn(*args)
    except Exception as exc:  # a probe reports, it never crashes: bad URL, bad deadline, ...
        return {"ok": False, "error": _error(exc)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])), flush=True)
    sys.exit(0)
