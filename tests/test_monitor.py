"""`sovkit monitor`: continuous compliance on a really applied site (local hosts, real Ansible, real HTTP).

One monitor process runs through the life of a site: compliant; its OPA server dies (non-compliant, never
compliant, and the monitor keeps going); the OPA server comes back while a model file is changed on the host
and an unreachable host joins the inventory (the drift shows within one interval, the new host is unknown, not
clean); the inventory becomes unreadable (a failed check, every host unknown); SIGTERM stops it with exit 0.
Every check is a signed statement that `sovkit attest verify` accepts and a line in the decision log. The
shipped systemd units name options the command really takes, and systemd's own verifier accepts them.
"""

from __future__ import annotations

import base64
import configparser
import gzip
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import typer
from prometheus_client.parser import text_string_to_metric_families

from sovkit.cli.main import app
from sovkit.inventory.models import LogSink
from sovkit.monitor.decisionlog import decision_event, write_decision
from tests.conftest import ROOT, CliResult
from tests.sitefactory import Site, free_ports, make_site

Cli = Callable[..., CliResult]
RECORDED: dict[str, Any] = json.loads((Path(__file__).parent / "fixtures/opa/responses.json").read_text())
PREDICATE = "https://sovkit.dev/attestation/compliance-check/v1"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# --- a stand-in OPA server: recorded OPA REST answers, on a port that can be closed and reopened ------------------


WARN = {"id": "OPS-900", "severity": "warn", "msg": "a test warning", "resource": "site/demo",
        "remediation": "none needed"}


class Opa:
    """Answers the Policy and Data API calls sovkit makes with OPA's recorded responses; the decision is
    allowed with one warning (so a rule has a series in the metrics)."""

    ROUTES: ClassVar[dict[tuple[str, str], str]] = {
        ("GET", "/v1/policies"): "list_policies_empty", ("PUT", "/v1/policies/"): "put_policy_ok",
        ("DELETE", "/v1/policies/"): "delete_policy_ok", ("PUT", "/v1/data/"): "put_data_ok",
        ("POST", "/v1/data/sovkit/main/decision"): "decision_allowed"}

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        routes = self.ROUTES
        decision: dict[str, Any] = {"status": 200,
                                    "body": {"result": {"allowed": True, "deny": [], "warn": [WARN], "waived": []}}}

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                best = max((p for (m, p) in routes if m == self.command and self.path.startswith(p)), key=len)
                resp = decision if best.endswith("/decision") else RECORDED[routes[(self.command, best)]]
                payload = b"" if resp["body"] is None else json.dumps(resp["body"]).encode()
                self.send_response(resp["status"])
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def scrape(port: int) -> Samples:
    """GET /metrics and parse it with prometheus_client's own parser: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_for(port: int, proc: subprocess.Popen[str], done: Callable[[Samples], bool], what: str,
             deadline_s: float = 240) -> Samples:
    """Scrape until ``done``; a deadline only so a broken monitor fails the test instead of hanging it."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the monitor exited ({proc.returncode}) while waiting for {what}"
        try:
            samples = scrape(port)
        except OSError:
            samples = {}
        if samples and done(samples):
            return samples
        time.sleep(0.3)
    raise AssertionError(f"no {what} before the deadline; last scrape: {samples}")


def checks(samples: Samples) -> float:
    return value(samples, "sovkit_checks_total") or 0.0


def statements(site: Site) -> list[dict[str, Any]]:
    out = []
    for line in (site.root / ".sovkit/attestations/log.jsonl").read_text().splitlines():
        payload = json.loads(base64.b64decode(json.loads(line)["envelope"]["payload"]))
        if payload["predicateType"] == PREDICATE:
            out.append(payload["predicate"])
    return out


# --- the site ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """One local host serving one plain deployment, applied; its decision-log sink is a JSONL file here."""
    site = make_site(tmp_path_factory.mktemp("monitor"))
    site.data["hosts"] = site.data["hosts"][:1]
    site.data["serving_groups"] = []
    plain = site.data["deployments"][0]
    for key in ("role", "targets"):
        plain.pop(key, None)
    plain["max_batch"] = 4
    site.data["deployments"] = [plain]
    for sink in site.data["log_sinks"]:
        if sink.get("decision_log"):
            sink["url"] = (site.root.parent / "decisions").as_uri()
            sink["retention_days"] = max(sink["retention_days"], 400)
    site.save()
    from tests.conftest import run_cli

    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 0, r.text
    return site


@pytest.fixture
def opa() -> Iterator[Opa]:
    server = Opa(free_ports(1)[0])
    server.start()
    yield server
    server.stop()


def _ghost(site: Site) -> dict[str, Any]:
    """A host nobody can reach: SSH to a closed port."""
    return {"name": "ghost-node", "rack": "demo-rack", "address": "127.0.0.1", "arch": "aarch64",
            "cpu": "arm-neoverse-v2", "connection": "ssh", "ssh": {"port": free_ports(1)[0]},
            "python_interpreter": sys.executable, "service_manager": "supervisor",
            "root": str(site.root.parent / "ghost")}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_monitor_tracks_compliance_engine_failure_and_drift_and_stops_cleanly(applied: Site, opa: Opa,
                                                                              cli: Cli) -> None:
    site = applied
    port = free_ports(1)[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sovkit", "monitor", str(site.path), "--interval", "2s", "--metrics-port", str(port),
         "--opa-url", opa.url, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    tokenizer = site.host_root("npu-node-1") / "opt/sovkit/models/demo-ko-chat/current/tokenizer.json"
    original = tokenizer.read_bytes()
    try:
        # 1. the applied site, with a live policy engine: compliant, every host observed, nothing drifted
        first = wait_for(port, proc, lambda s: checks(s) >= 1, "first check")
        assert value(first, "sovkit_compliant") == 1, first
        assert value(first, "sovkit_policy_engine_up") == 1 and value(first, "sovkit_policy_allowed") == 1
        assert value(first, "sovkit_host_observable", host="npu-node-1") == 1
        assert value(first, "sovkit_drift", host="npu-node-1", component="model") == 0
        assert value(first, "sovkit_serving_healthy", host="npu-node-1", deployment="chat-prefill") == 1
        assert (value(first, "sovkit_last_successful_check_timestamp_seconds") or 0) > 0
        assert value(first, "sovkit_attestation_log_valid") == 1
        assert value(first, "sovkit_monitor_info", site="demo", version="0.1.0") == 1
        assert value(first, "sovkit_policy_rule_violations", rule="OPS-900", severity="warn") == 1

        # 2. the OPA server dies: not compliant (the site is otherwise unchanged), and the monitor goes on
        opa.stop()
        dead = wait_for(port, proc, lambda s: value(s, "sovkit_policy_engine_up") == 0, "a check with the engine down")
        assert value(dead, "sovkit_compliant") == 0 and value(dead, "sovkit_policy_allowed") == 0
        assert value(dead, "sovkit_drift", host="npu-node-1", component="model") == 0
        assert (value(dead, "sovkit_check_errors_total", stage="policy") or 0) >= 1
        rule = value(dead, "sovkit_policy_rule_violations", rule="OPS-900", severity="warn")
        assert rule is not None and math.isnan(rule), "no answer: the rule's result is unknown, not 'passes'"

        # 3. the engine is back; a model file changes on the host and an unreachable host joins the inventory
        opa.start()
        site.data["hosts"].append(_ghost(site))
        site.save()
        tokenizer.write_bytes(original + b" ")
        at_change = checks(scrape(port))
        drifted = wait_for(port, proc, lambda s: value(s, "sovkit_drift", host="npu-node-1", component="model") == 1
                           and value(s, "sovkit_host_observable", host="ghost-node") is not None,
                           "the drifted model and the new host")
        # within one interval: the check under way at the change may miss them, the next one may not
        assert checks(drifted) <= at_change + 2, (at_change, checks(drifted))
        assert value(drifted, "sovkit_compliant") == 0 and value(drifted, "sovkit_policy_engine_up") == 1
        assert value(drifted, "sovkit_drift", host="npu-node-1", component="firmware") == 0
        assert value(drifted, "sovkit_host_observable", host="ghost-node") == 0
        ghost = value(drifted, "sovkit_drift", host="ghost-node", component="model")
        assert ghost is not None and math.isnan(ghost), "an unobservable host is unknown, not 'no drift'"

        # 4. the inventory becomes unreadable: a failed check (every host unknown), and the monitor goes on
        good = site.path.read_bytes()
        site.path.write_text("hosts: [unclosed\n")
        broken = wait_for(port, proc, lambda s: (value(s, "sovkit_check_errors_total", stage="inventory") or 0) >= 1,
                          "a check of the unreadable inventory")
        assert value(broken, "sovkit_compliant") == 0
        assert value(broken, "sovkit_host_observable", host="npu-node-1") == 0
        unknown = value(broken, "sovkit_drift", host="npu-node-1", component="model")
        assert unknown is not None and math.isnan(unknown)
        total = checks(broken)
    finally:
        if "good" in locals():
            site.path.write_bytes(good)
        tokenizer.write_bytes(original)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "monitor stopped" not in out  # --json: stdout holds only the check lines

    # every check (the one SIGTERM abandoned too) is one signed statement and one stdout line
    preds = statements(site)
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(preds) == len(lines) >= total
    assert [p["decision_id"] for p in preds] == [line["predicate"]["decision_id"] for line in lines]
    assert preds[0]["compliant"] is True and preds[0]["errors"] == {} and preds[0]["unobservable"] == {}
    assert preds[0]["warn"] == ["OPS-900"] and preds[0]["deny"] == []
    down = next(p for p in preds if "policy" in p["errors"])
    assert down["allowed"] is False and down["compliant"] is False and "cannot connect" in down["errors"]["policy"]
    seen = next(p for p in preds if p["drift"] and "ghost-node" in p["unobservable"])
    assert [c["component"] for c in seen["drift"]["npu-node-1"]] == ["model"]
    assert "ghost-node" not in seen["drift"] and "ghost-node" not in seen["observed"] and "observe" in seen["errors"]
    unread = next(p for p in preds if "inventory" in p["errors"])
    assert unread["inventory_digest"] is None and unread["compliant"] is False
    assert "npu-node-1" in unread["unobservable"]
    r = cli("attest", "verify", site.path, "--key", site.root / ".sovkit/keys/operator.key.pub")
    assert r.code == 0, r.text

    # the decision log: one OPA-shaped event per check, the engine failure as an error, never as a result
    events = [json.loads(line) for line in (site.root.parent / "decisions/decision-log.jsonl").read_text()
              .splitlines()]
    assert [e["decision_id"] for e in events] == [p["decision_id"] for p in preds]
    assert events[0]["path"] == "sovkit/main/decision" and events[0]["result"]["allowed"] is True
    assert events[0]["erased"] == ["/input"] and events[0]["input_digest"].startswith("sha256:")
    failed = next(e for e in events if e["decision_id"] == down["decision_id"])
    assert "result" not in failed and "cannot connect" in failed["error"]["message"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_once_and_count_exit_codes_and_the_metrics_file(applied: Site, tmp_path: Path) -> None:
    """The timer form: 0 compliant, 3 not compliant, 1 a failed check or an unwritable metrics file."""
    from tests.conftest import run_cli

    applied.data["hosts"] = [h for h in applied.data["hosts"] if h["name"] != "ghost-node"]  # another test's
    applied.save()
    prom = tmp_path / "sovkit.prom"
    ok = run_cli("monitor", applied.path, "--once", "--metrics-file", prom)
    assert ok.code == 0, ok.text
    assert "sovkit_compliant 1.0" in prom.read_text().splitlines()

    tokenizer = applied.host_root("npu-node-1") / "opt/sovkit/models/demo-ko-chat/current/tokenizer.json"
    original = tokenizer.read_bytes()
    tokenizer.write_bytes(original + b" ")
    try:
        drifted = run_cli("monitor", applied.path, "--count", "2", "--interval", "1s", "--metrics-file", prom, "--json")
    finally:
        tokenizer.write_bytes(original)
    assert drifted.code == 3, drifted.text
    assert [json.loads(line)["predicate"]["compliant"] for line in drifted.out.splitlines()] == [False, False]
    assert "sovkit_compliant 0.0" in prom.read_text().splitlines()

    dead = run_cli("monitor", applied.path, "--once", "--opa-url", f"http://127.0.0.1:{free_ports(1)[0]}")
    assert dead.code == 1, dead.text  # the policy stage could not run: a failed check, not a verdict

    before = prom.read_bytes()
    unwritable = run_cli("monitor", applied.path, "--once", "--metrics-file", tmp_path / "no-such-dir" / "x.prom")
    assert unwritable.code == 1 and "cannot write metrics to" in unwritable.err, unwritable.text
    assert "Traceback" not in unwritable.text and prom.read_bytes() == before


# --- decision-log sinks -------------------------------------------------------------------------------------------


def test_decision_log_sinks_file_http_and_unsupported_schemes(tmp_path: Path) -> None:
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sinks = [LogSink(name="local", url=(tmp_path / "logs").as_uri(), jurisdiction="KR", retention_days=400,
                         decision_log=True),
                 LogSink(name="one-file", url=(tmp_path / "d.jsonl").as_uri(), jurisdiction="KR", retention_days=400,
                         decision_log=True),
                 LogSink(name="collector", url=f"http://127.0.0.1:{server.server_address[1]}/logs",
                         jurisdiction="KR", retention_days=400, decision_log=True),
                 LogSink(name="siem", url="syslog://logs.example:514", jurisdiction="KR", retention_days=400,
                         decision_log=True),
                 LogSink(name="inference-only", url="s3://bucket/x", jurisdiction="KR", retention_days=400)]
        event = decision_event(decision_id="d-1", site="demo", timestamp="2026-01-01T00:00:00Z",
                               input_digest="sha256:00", pack_digest="sha256:11", engine="embedded",
                               result={"allowed": True, "findings": []}, error=None)
        for _ in range(2):
            written = write_decision(sinks, event)
    finally:
        server.shutdown()
        server.server_close()
    assert written["local"] == written["one-file"] == written["collector"] == "ok"
    assert "scheme 'syslog' is not supported" in written["siem"], "an unsupported sink is an error, never skipped"
    assert "inference-only" not in written
    assert [json.loads(x) for x in (tmp_path / "logs/decision-log.jsonl").read_text().splitlines()] == [event] * 2
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 2
    headers, body = got[0]
    assert headers["Content-Encoding"] == "gzip" and json.loads(gzip.decompress(body)) == [event]


def test_file_sink_never_writes_through_a_planted_symlink_or_into_a_fifo(tmp_path: Path) -> None:
    """A decision log's name made a symlink to another file (or a FIFO) is that sink's error; the target is
    untouched."""
    precious = tmp_path / "shadow"
    precious.write_text("root:x:0:0\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "decision-log.jsonl").symlink_to(precious)
    os.mkfifo(tmp_path / "pipe.jsonl")
    sinks = [LogSink(name="linked", url=(tmp_path / "logs").as_uri(), jurisdiction="KR", retention_days=400,
                     decision_log=True),
             LogSink(name="fifo", url=(tmp_path / "pipe.jsonl").as_uri(), jurisdiction="KR", retention_days=400,
                     decision_log=True)]
    event = decision_event(decision_id="d-1", site="demo", timestamp="2026-01-01T00:00:00Z", input_digest=None,
                           pack_digest=None, engine="embedded", result={"allowed": True}, error=None)
    reader = os.open(tmp_path / "pipe.jsonl", os.O_RDONLY | os.O_NONBLOCK)  # so the FIFO opens for writing
    try:
        written = write_decision(sinks, event)
        assert os.read(reader, 100) == b""
    finally:
        os.close(reader)
    assert written["linked"].startswith("decision-log sink linked (") and "symbolic link" in written["linked"]
    assert "is not a regular file" in written["fifo"], written
    assert precious.read_text() == "root:x:0:0\n"


# --- CLI --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["15", "1.5m", "0s", "1h30m", "15 m", "-1m", "15M"])
def test_interval_is_parsed_strictly(bad: str, cli: Cli, tmp_path: Path) -> None:
    r = cli("monitor", tmp_path / "missing.yaml", "--interval", bad)
    assert r.code == 1 and f"interval {bad!r} is not a duration" in r.err, r.text


def test_once_and_count_exclude_each_other(cli: Cli, tmp_path: Path) -> None:
    r = cli("monitor", tmp_path / "missing.yaml", "--once", "--count", "2")
    assert r.code == 1 and "--once and --count exclude each other" in r.err


# --- systemd units ----------------------------------------------------------------------------------------------------

UNITS = ROOT / "templates/systemd"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((UNITS / name).read_text())
    return parser


def _monitor_options() -> dict[str, bool]:
    """The options `sovkit monitor` accepts: name -> takes a value."""
    command = typer.main.get_command(app).commands["monitor"]  # type: ignore[attr-defined]
    return {opt: not p.is_flag for p in command.params if hasattr(p, "is_flag") for opt in p.opts}


@pytest.mark.parametrize("service", ["sovkit-monitor.service", "sovkit-monitor-daemon.service"])
def test_shipped_units_run_a_real_monitor_command(service: str) -> None:
    from sovkit.monitor.loop import parse_interval

    unit = _unit(service)
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[0].startswith("/") and argv[0].endswith("/sovkit") and argv[1] == "monitor"
    options = _monitor_options()
    rest = argv[3:]
    while rest:
        opt = rest.pop(0)
        assert opt in options, f"{service}: `sovkit monitor` has no option {opt}"
        if options[opt]:
            arg = rest.pop(0)
            if opt == "--interval":
                parse_interval(arg)
    if service == "sovkit-monitor.service":
        assert unit["Service"]["Type"] == "oneshot" and "--once" in argv
        timer = _unit("sovkit-monitor.timer")
        assert timer["Timer"]["Unit"] == service and timer["Timer"]["OnUnitActiveSec"] == "15min"
        assert timer["Install"]["WantedBy"] == "timers.target"
    else:
        assert unit["Service"]["KillMode"] == "mixed" and "--once" not in argv and "--metrics-port" in argv


def test_shipped_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own parser (Debian's systemd; tests/run-all.sh installs it), with ExecStart pointed at an
    executable that exists here."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (apt-get install systemd)"
    fake = tmp_path / "sovkit"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    for f in UNITS.iterdir():
        (tmp_path / f.name).write_text(f.read_text().replace("/usr/local/bin/sovkit", str(fake)))
    names = sorted(f.name for f in UNITS.iterdir())
    assert names == ["sovkit-monitor-daemon.service", "sovkit-monitor.service", "sovkit-monitor.timer"]
    r = subprocess.run([analyze, "verify", "--man=no", *names], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
