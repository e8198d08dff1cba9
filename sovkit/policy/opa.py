"""The OPA-server engine: load the pack through the Policy API, ask the Data API for the decision.

``PUT /v1/policies/sovkit/<module>`` for each module (stale ``sovkit/`` modules
are deleted first), ``PUT /v1/data/sovkit/<key>`` for the pack data, then
``POST /v1/data/sovkit/main/decision`` with ``{"input": …}``. Fail closed:
connection refused, timeout, any 4xx/5xx, a non-JSON body or an undefined
result (200 without ``result``) is a PolicyError naming which, never "allowed".
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from opa_client import OpaClient

from sovkit.errors import PolicyError
from sovkit.policy.engine import Decision, decision_from_raw
from sovkit.policy.pack import PolicyPack

POLICY_PREFIX = "sovkit/"


class OpaServerEngine:
    """Evaluates on an OPA server (``--opa-url``), with an optional bearer token and a per-request timeout."""

    name = "opa"

    def __init__(self, url: str, token: str | None = None, timeout: float = 5.0, load_pack: bool = True) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PolicyError(f"--opa-url {url!r} is not an http(s) URL", "e.g. --opa-url http://127.0.0.1:8181")
        if parts.path not in ("", "/"):
            raise PolicyError(f"--opa-url {url!r} has a path", "give the server root; sovkit adds /v1/…")
        if timeout <= 0:
            raise PolicyError(f"--opa-timeout must be positive, not {timeout}")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = parts.scheme == "https"
        self.token = token
        self.timeout = timeout
        self.load = load_pack

    def _client(self) -> OpaClient:
        return OpaClient(host=self.host, port=self.port, ssl=self.ssl, token=self.token, timeout=self.timeout,
                         retries=0)

    def _fail(self, step: str, exc: Exception) -> PolicyError:
        where = f"OPA server {self.url} ({step})"
        if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.ReadTimeout):
            return PolicyError(f"{where}: no answer within {self.timeout:g} s (timeout)",
                               "check the server, or raise --opa-timeout; nothing is allowed without an answer")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return PolicyError(f"{where}: cannot connect (connection refused or unreachable)",
                               "start the OPA server or fix --opa-url; nothing is allowed without an answer")
        if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
            return PolicyError(f"{where}: HTTP {exc.response.status_code}: {_message(exc.response)}",
                               _hint(exc.response.status_code))
        message = str(getattr(exc, "message", None) or exc or type(exc).__name__)
        code = getattr(exc, "expression", None)
        errors = getattr(exc, "errors", None)
        if errors and isinstance(errors[0], dict):
            loc = errors[0].get("location") or {}
            message += f" ({loc.get('file', '?')}:{loc.get('row', '?')}: {errors[0].get('message', '')})"
        return PolicyError(f"{where}: {f'{code}: ' if code else ''}{message}",
                           "the server rejected the request; see its log")

    def _load_pack(self, client: OpaClient, pack: PolicyPack) -> None:
        wanted = {POLICY_PREFIX + name for name in pack.modules}
        step = "list policies"
        try:
            for stale in sorted(p for p in client.get_policies_list() if p.startswith(POLICY_PREFIX)):
                if stale not in wanted:
                    step = f"delete stale policy {stale}"
                    client.delete_policy(stale)
            for name, source in sorted(pack.modules.items()):
                step = f"load policy {POLICY_PREFIX + name}"
                client.update_policy_from_string(source, POLICY_PREFIX + name, rego_compat=False)
            for root, tree in sorted(pack.data.items()):
                for key, value in sorted(tree.items()):
                    step = f"load data {root}/{key}"
                    client.update_or_create_data(value, f"{root}/{key}")
        except Exception as exc:  # every client failure is a fail-closed PolicyError
            raise self._fail(step, exc) from exc

    def evaluate(self, pack: PolicyPack, input_doc: dict[str, Any]) -> Decision:
        client = self._client()
        try:
            if self.load:
                self._load_pack(client, pack)
            try:
                body = client.query_rule(input_doc, "sovkit.main", "decision")
            except Exception as exc:
                raise self._fail("query data/sovkit/main/decision", exc) from exc
        finally:
            client.close_connection()
        if not isinstance(body, dict):
            raise PolicyError(f"OPA server {self.url}: the Data API answered {type(body).__name__}, not an object")
        return decision_from_raw(body.get("result"), self.name, pack.digest)


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason
    if isinstance(body, dict):
        detail = body.get("message") or body.get("code") or ""
        errors = body.get("errors") or []
        if errors and isinstance(errors[0], dict):
            loc = errors[0].get("location") or {}
            detail += f" ({loc.get('file', '?')}:{loc.get('row', '?')}: {errors[0].get('message', '')})"
        return str(detail)
    return str(body)[:200]


def _hint(status: int) -> str:
    if status in (401, 403):
        return "pass the server's bearer token with --opa-token"
    if status == 400:
        return "the server rejected a module or the input; check the pack with `sovkit policy test`"
    return "the server failed; see its log. Nothing is allowed without an answer"
