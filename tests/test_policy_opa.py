"""The OPA-server adapter at the HTTP level: a local server replays recorded OPA REST responses."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sovkit.errors import PolicyError
from sovkit.inventory.loader import load_inventory
from sovkit.policy.api import evaluate_policy
from sovkit.policy.input import build_input
from sovkit.policy.opa import OpaServerEngine
from sovkit.policy.pack import load_pack
from tests.conftest import INVENTORIES, CliResult

RECORDED: dict[str, Any] = json.loads((Path(__file__).parent / "fixtures/opa/responses.json").read_text())
DEMO = INVENTORIES / "demo"


class Replay:
    """Routes (method, path prefix) to a recorded response; records every request it gets."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], str] = {
            ("GET", "/v1/policies"): "list_policies_empty",
            ("PUT", "/v1/policies/"): "put_policy_ok",
            ("DELETE", "/v1/policies/"): "delete_policy_ok",
            ("PUT", "/v1/data/"): "put_data_ok",
            ("POST", "/v1/data/sovkit/main/decision"): "decision_allowed",
        }
        self.requests: list[dict[str, Any]] = []
        self.delay = 0.0

    def answer(self, method: str, path: str) -> dict[str, Any]:
        best = max((p for (m, p) in self.routes if m == method and path.startswith(p)), key=len, default=None)
        if best is None:
            return {"status": 404, "body": {"code": "resource_not_found", "message": path}}
        return dict(RECORDED[self.routes[(method, best)]])


@pytest.fixture
def opa() -> Iterator[tuple[str, Replay]]:
    replay = Replay()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            replay.requests.append({"method": self.command, "path": self.path, "body": body,
                                    "auth": self.headers.get("Authorization")})
            if replay.delay:
                time.sleep(replay.delay)
            resp = replay.answer(self.command, self.path)
            payload = b"" if resp["body"] is None else json.dumps(resp["body"]).encode()
            self.send_response(resp["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", replay
    finally:
        server.shutdown()
        server.server_close()


def _evaluate(url: str, token: str | None = None, timeout: float = 2.0) -> Any:
    return evaluate_policy(load_inventory(DEMO), None, None, OpaServerEngine(url, token, timeout))


def test_loads_the_pack_through_the_policy_api_and_queries_the_data_api(opa: tuple[str, Replay]) -> None:
    url, replay = opa
    decision = _evaluate(url, token="s3cret")
    assert decision.allowed is True and decision.engine == "opa"
    pack = load_pack()
    puts = [r for r in replay.requests if r["method"] == "PUT" and r["path"].startswith("/v1/policies/")]
    assert sorted(r["path"] for r in puts) == sorted(f"/v1/policies/sovkit/{n}" for n in pack.modules)
    by_path = {r["path"]: r["body"].decode() for r in puts}
    assert by_path["/v1/policies/sovkit/main.rego"] == pack.modules["main.rego"]
    data_put = next(r for r in replay.requests if r["path"] == "/v1/data/sovkit/config")
    assert json.loads(data_put["body"]) == pack.data["sovkit"]["config"]
    query = replay.requests[-1]
    assert (query["method"], query["path"]) == ("POST", "/v1/data/sovkit/main/decision")
    sent = json.loads(query["body"])
    assert set(sent) == {"input"}
    assert sent["input"]["site"]["name"] == "demo" and sent["input"]["apiVersion"] == "sovkit.dev/policy-input/v2"
    assert {r["auth"] for r in replay.requests} == {"Bearer s3cret"}


def test_stale_sovkit_modules_are_deleted_others_left_alone(opa: tuple[str, Replay]) -> None:
    url, replay = opa
    replay.routes[("GET", "/v1/policies")] = "list_policies_with_stale"
    _evaluate(url)
    deleted = [r["path"] for r in replay.requests if r["method"] == "DELETE"]
    assert deleted == ["/v1/policies/sovkit/old_rule.rego"]


def test_findings_and_waivers_come_back_as_the_same_decision(opa: tuple[str, Replay]) -> None:
    url, replay = opa
    replay.routes[("POST", "/v1/data/sovkit/main/decision")] = "decision_denied"
    d = _evaluate(url)
    assert d.allowed is False
    assert d.findings[0] == {"id": "RES-003", "severity": "deny", "resource": "telemetry/metrics",
                             "msg": RECORDED["decision_denied"]["body"]["result"]["deny"][0]["msg"],
                             "remediation": "move the telemetry sink into [\"KR\"]"}
    assert d.findings[1]["waived"] == {"reason": "reviewed in CR-9", "expires": "2027-01-01"}


FAILURES: dict[str, tuple[tuple[str, str], str, str]] = {
    "undefined decision": (("POST", "/v1/data/sovkit/main/decision"), "decision_undefined", "is undefined"),
    "malformed decision": (("POST", "/v1/data/sovkit/main/decision"), "decision_malformed", "malformed"),
    "inconsistent decision": (("POST", "/v1/data/sovkit/main/decision"), "decision_inconsistent", "inconsistent"),
    "401 on load": (("PUT", "/v1/policies/"), "unauthorized", "missing or invalid bearer token"),
    "400 compile error": (("PUT", "/v1/policies/"), "compile_error", "sovkit/residency.rego:12"),
    "500 on query": (("POST", "/v1/data/sovkit/main/decision"), "internal_error", "HTTP 500"),
    "500 on data": (("PUT", "/v1/data/"), "internal_error", "load data sovkit/config"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_every_server_failure_fails_closed(case: str, opa: tuple[str, Replay]) -> None:
    url, replay = opa
    route, response, expected = FAILURES[case]
    replay.routes[route] = response
    with pytest.raises(PolicyError) as err:
        _evaluate(url)
    assert expected in err.value.message
    assert err.value.exit_code == 1


def test_timeout_fails_closed(opa: tuple[str, Replay]) -> None:
    url, replay = opa
    replay.delay = 1.0
    started = time.monotonic()
    with pytest.raises(PolicyError, match=r"no answer within 0.3 s \(timeout\)"):
        _evaluate(url, timeout=0.3)
    assert time.monotonic() - started < 5


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_fails_closed() -> None:
    with pytest.raises(PolicyError, match="cannot connect"):
        _evaluate(f"http://127.0.0.1:{_closed_port()}")


@pytest.mark.parametrize("url", ["ftp://opa:8181", "http://opa:8181/v1/data", "opa:8181"])
def test_bad_url_is_refused(url: str) -> None:
    with pytest.raises(PolicyError, match="--opa-url"):
        OpaServerEngine(url)


def test_cli_check_on_opa_server_exit_codes(opa: tuple[str, Replay], cli: Callable[..., CliResult]) -> None:
    url, replay = opa
    assert cli("check", DEMO, "--opa-url", url).code == 0
    replay.routes[("POST", "/v1/data/sovkit/main/decision")] = "decision_denied"
    r = cli("check", DEMO, "--opa-url", url)
    assert r.code == 3 and "RES-003" in r.out
    replay.routes[("POST", "/v1/data/sovkit/main/decision")] = "decision_undefined"
    r = cli("check", DEMO, "--opa-url", url)
    assert r.code == 1 and "undefined" in r.err and "allowed" not in r.out
    r = cli("check", DEMO, "--opa-url", f"http://127.0.0.1:{_closed_port()}")
    assert r.code == 1 and "cannot connect" in r.err


def test_cli_plan_uses_the_opa_server(opa: tuple[str, Replay], cli: Callable[..., CliResult], tmp_path: Path
                                      ) -> None:
    from tests.sitefactory import make_site

    url, replay = opa
    replay.routes[("POST", "/v1/data/sovkit/main/decision")] = "decision_denied"
    site = make_site(tmp_path)
    r = cli("plan", site.path, "--opa-url", url)
    assert r.code == 3 and "RES-003" in r.out
    assert any(q["path"] == "/v1/data/sovkit/main/decision" for q in replay.requests)


# --- a real OPA server: runs whenever `opa` is on PATH (see docs/policy.md) --------------------------------

OPA = shutil.which("opa")


@pytest.fixture
def real_opa(tmp_path: Path) -> Iterator[str]:
    if OPA is None:
        pytest.skip("no `opa` binary on PATH (docs/policy.md: how to get one)")
    port = _closed_port()
    proc = subprocess.Popen([OPA, "run", "--server", f"--addr=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_real_opa_server_agrees_with_the_embedded_engine(real_opa: str, tmp_path: Path) -> None:
    from tests.sitefactory import make_site
    from tests.test_policy_rules import VIOLATIONS

    site = make_site(tmp_path)
    VIOLATIONS["RES-003"][1](site)
    VIOLATIONS["CAP-002"][1](site)
    inv = load_inventory(site.save())
    embedded = evaluate_policy(inv, None, None, None)
    served = evaluate_policy(inv, None, None, OpaServerEngine(real_opa, None, 10))
    assert served.allowed is embedded.allowed is False
    assert served.findings == embedded.findings


def test_real_opa_runs_the_rego_unit_tests(tmp_path: Path) -> None:
    if OPA is None:
        pytest.skip("no `opa` binary on PATH (docs/policy.md: how to get one)")
    from tests.conftest import ROOT

    proc = subprocess.run([OPA, "test", str(ROOT / "policies")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bundle_input_round_trip_is_plain_json() -> None:
    doc = build_input(load_inventory(DEMO))
    assert json.loads(json.dumps(doc)) == doc
