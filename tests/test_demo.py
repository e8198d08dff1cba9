"""The README's main-job command: `sovkit demo`, end to end, twice (the second run has nothing to do)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sovkit.attest.log import read_log
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_demo_runs_the_main_job_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    first = run_cli("demo", "--workdir", work, timeout=1500)
    assert first.code == 0, first.text
    for step in ("1/10", "evaluate the policy pack", "apply the saved plan", "No changes", "10/10", "demo complete"):
        assert step in first.out, step
    # it ends with a real answer through the router (prefill, then decode), and its timings
    assert "Hello from demo-ko-chat version 1.0" in first.out and "time to first token" in first.out
    assert "serving group chat (apply): smoke request through chat-router on npu-node-1" in first.out
    # beside what the request measured, the serving planner's prediction for the same shape, labelled
    flat = " ".join(first.out.split())  # rich wraps long lines
    num = r"([0-9.]+(?:e[+-][0-9]+)?)"
    measured = re.search(rf"measured: time to first token {num} ms, per token {num} ms", flat)
    predicted = re.search(rf"predicted: time to first token {num} ms \(prefill {num} ms \+ KV transfer {num} ms\), "
                          rf"per token {num} ms", flat)
    assert measured and predicted, first.out
    assert all(float(x) > 0 for x in (*measured.groups(), *predicted.groups()))
    assert re.search(r"serving planner, \d+-token prompt at batch 1, prefill on rebellions-atom-max TP 1, decode on "
                     r"rebellions-atom-max TP 1, (un)?calibrated", flat), first.out
    assert "on the simulator the measured side is the simulator's" in flat
    state = json.loads((work / ".sovkit" / "state.json").read_text())
    assert set(state["hosts"]) == {"npu-node-1", "npu-node-2"}
    assert all(h["models"]["demo-ko-chat"]["version"] == "1.0" for h in state["hosts"].values())
    report = json.loads((work / "audit-pack" / "report.json").read_text())
    assert report["overview"]["site"] == "demo" and report["policy"]["allowed"] is True
    kinds = [e.predicate.get("operation") for e in read_log(work / ".sovkit" / "attestations")]
    assert kinds.count("apply") == 2 and "check" in kinds and "plan" in kinds

    # the second run in JSON mode: stdout is one document summarising the steps, the progress goes to stderr
    second = run_cli("demo", "--workdir", work, "--json", timeout=1500)
    assert second.code == 0, second.text
    summary = json.loads(second.out)
    assert summary["ok"] is True and summary["workdir"] == str(work.resolve())
    assert summary["audit_pack"] == str(work.resolve() / "audit-pack")
    assert len(summary["steps"]) == 10 and all(s["ok"] and s["detail"] == "exit 0" for s in summary["steps"])
    assert all(set(s) == {"name", "command", "ok", "detail"} for s in summary["steps"])
    assert summary["steps"][3]["name"] == "apply the saved plan through Ansible"
    assert summary["steps"][0]["command"].startswith("sovkit validate ")
    assert "No changes" in second.err and "apply the saved plan" in second.err
    again = json.loads((work / ".sovkit" / "state.json").read_text())
    assert again["hosts"] == state["hosts"], "a converged site must not be re-installed"
