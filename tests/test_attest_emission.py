"""What apply, rollback and plan record in the attestation log (through the Executor port, no Ansible).

The real Ansible path is covered end to end in test_attest_e2e.py; here a scripted executor plays
the hosts so outcomes Ansible rarely produces on demand (a host failing mid-way) are checked fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sovkit import api
from sovkit.attest.log import read_log
from sovkit.attest.predicates import POLICY_DECISION_PREDICATE, PROVISION_PREDICATE
from sovkit.components.host import DesiredHost, desired_site
from sovkit.errors import VerificationError
from sovkit.policy.api import PolicyDecision
from sovkit.provision.executor import ExecEvent, HostOutcome, HostTarget, RunResult
from sovkit.signing.keys import LocalSigner, write_keypair
from tests.conftest import CliResult
from tests.sitefactory import make_site

OPERATOR = LocalSigner.from_seed(b"operator")


def _records(d: DesiredHost) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for kind, fw in d.firmware.items():
        out.append({"component": "firmware", "name": kind, "version": fw.version, "image_sha256": fw.image.sha256,
                    "devices": {str(i): fw.version for i in range(fw.count)}})
    for rt in d.runtimes.values():
        out.append({"component": "runtime", "name": rt.name, "version": rt.version, "package": rt.package,
                    "prefix": rt.prefix, "artifacts": {a.store_path: a.sha256 for a in rt.artifacts}})
    for m in d.models.values():
        out.append({"component": "model", "name": m.name, "version": m.version, "path": f"{m.path}/{m.version}",
                    "previous": None, "files": {f.name: f.sha256 for f in m.files}})
    for s in d.serving.values():
        out.append({"component": "serving", "name": s.deployment, "role": s.role, "model": s.model,
                    "model_version": s.model_version, "runtime": s.runtime, "runtime_version": s.runtime_version,
                    "config_sha256": s.config_sha256, "port": s.port})
    return out


class ScriptedExecutor:
    """Plays each host: emits its records; a host named in ``fail_after`` stops after that many records."""

    def __init__(self, desired: dict[str, DesiredHost], fail_after: dict[str, int] | None = None,
                 rollback_to: str | None = None) -> None:
        self.desired, self.fail_after, self.rollback_to = desired, fail_after or {}, rollback_to

    def run(self, playbook: str, targets: list[HostTarget], on_event: Callable[[ExecEvent], None], workdir: Path,
            cancel: Callable[[], bool] = lambda: False, run_id: str | None = None,
            forks: int | None = None) -> RunResult:
        hosts: dict[str, HostOutcome] = {}
        if playbook == "probe.yml":  # the serving checks after apply: every process answers
            for t in targets:
                answers = [json.dumps({"ok": True, "status": 200, "ttft_ms": 1.0, "text": "ok"})
                           for _ in t.variables["sovkit_probes"]]
                on_event(ExecEvent("record", t.name, "probe", data={"sovkit_probed": answers}))
                hosts[t.name] = HostOutcome()
            return RunResult(run_id="scripted", rc=0, hosts=hosts)
        for t in targets:
            records = _records(self.desired[t.name])
            if playbook == "rollback.yml":
                m = next(r for r in records if r["component"] == "model")
                # the rollback play reports the version it switched to and the directory it now points at
                records = [{**m, "version": self.rollback_to, "previous": m["version"],
                            "path": f"{m['path'].rsplit('/', 1)[0]}/{self.rollback_to}"}]
            limit = self.fail_after.get(t.name)
            for r in records[:limit]:
                on_event(ExecEvent("record", t.name, "record", data={"sovkit_record": r}))
            hosts[t.name] = HostOutcome(failed=limit is not None, failed_task="model | verify" if limit else "",
                                        error="digest mismatch on host" if limit else "")
        return RunResult(run_id="scripted", rc=0, hosts=hosts)


def test_apply_attests_each_host_with_its_outcome_and_rollback_attests_too(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    ws = api.open_workspace(inventory=site.path)
    result = api.make_plan(workspace=ws)
    desired = {h.name: h for h in desired_site(ws.inventory).values()}
    executor = ScriptedExecutor(desired, fail_after={"npu-node-2": 2})
    report = api.apply_plan(workspace=ws.using(executor=executor, signer=OPERATOR), plan=result.plan,
                            decision=result.decision, expected=result.bindings)
    assert not report.ok
    entries = read_log(ws.attestations)
    by_host = {e.predicate["host"]: e for e in entries if e.predicate_type == PROVISION_PREDICATE}
    assert set(by_host) == {"npu-node-1", "npu-node-2"}
    good, bad = by_host["npu-node-1"].predicate, by_host["npu-node-2"].predicate
    assert good["outcome"] == "success" and good["error"] is None
    assert {(c["name"], c["phase"], c["ready"]) for c in good["serving_checks"]} == {
        ("chat-prefill", "apply", True), ("chat-router", "apply", True)}
    assert bad["outcome"] == "failed" and bad["error"] == "model | verify: digest mismatch on host"
    assert bad["models"] == [] and bad["serving"] == {}, "only what was really recorded is attested"
    assert len(by_host["npu-node-2"].subjects) == 1 + len(desired["npu-node-2"].runtimes["simnpu-serve"].artifacts)
    assert good["inventory_digest"] == ws.inventory.digest
    assert good["plan_digest"] == bad["plan_digest"]
    assert {c["host"] for c in good["changes"]} == {"npu-node-1"}
    assert good["policy"] == {"pack_digest": result.bindings.policy_pack_digest, "allowed": True, "findings": 0,
                              "waived": 0}
    sig = good["models"][0]["signature"]
    assert sig["verified"] is True and sig["signer"] == "sovkit-demo-lab" and sig["format"] == "dsse"
    verified = api.verify_attestations(target=api.attestation_target(path=site.path), keys=[OPERATOR.public_key])
    assert verified.ok, [s.detail for s in verified.steps]

    # a state edited behind sovkit's back no longer matches the latest attestation
    state = ws.store.read()
    serving = state.hosts["npu-node-1"].serving
    serving["chat-prefill"] = serving["chat-prefill"].model_copy(update={"config_sha256": "f" * 64})
    state = ws.store.write(state)
    edited = api.verify_attestations(target=api.attestation_target(path=site.path), keys=[OPERATOR.public_key])
    assert not edited.ok
    msg = edited.step("subjects").detail
    assert "subject serving/chat-prefill of host npu-node-1" in msg and "is not in the recorded state" in msg

    # rollback: one more provision attestation, operation rollback, naming the version now active
    models = state.hosts["npu-node-1"].models
    models["demo-ko-chat"] = models["demo-ko-chat"].model_copy(update={"previous": "0.9"})
    ws.store.write(state)
    rb = api.rollback(workspace=ws.using(executor=ScriptedExecutor(desired, rollback_to="0.9"), signer=OPERATOR),
                      model="demo-ko-chat", hosts=["npu-node-1"])
    assert rb.ok, rb.failures
    last = read_log(ws.attestations)[-1]
    assert last.predicate["operation"] == "rollback" and last.predicate["host"] == "npu-node-1"
    assert last.predicate["models"][0]["version"] == "0.9" and last.predicate["plan_digest"] is None
    assert any(s["name"].startswith("model/demo-ko-chat/0.9/") for s in last.subjects)


def test_record_policy_decision_keeps_waived_findings(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    ws = api.open_workspace(inventory=site.path)
    findings = [{"id": "eu-ai-act.card", "severity": "deny", "resource": "model/x", "msg": "no card", "waived": True},
                {"id": "sov.region", "severity": "warn", "resource": "host/y", "msg": "check", "waived": False}]
    entry = api.record_policy_decision(workspace=ws.using(signer=OPERATOR), decision=PolicyDecision(True, findings),
                                       operation="check")
    assert entry.predicate_type == POLICY_DECISION_PREDICATE
    p = read_log(ws.attestations)[0].predicate
    assert p["operation"] == "check" and p["allowed"] is True and p["site"] == ws.inventory.site.metadata.name
    assert p["findings"] == findings and p["inventory_digest"] == ws.inventory.digest
    assert entry.subjects[0]["digest"]["sha256"] == ws.inventory.digest


def test_apply_refuses_up_front_when_the_log_cannot_take_an_append(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    ws = api.open_workspace(inventory=site.path)
    api.record_policy_decision(workspace=ws.using(signer=OPERATOR), decision=PolicyDecision(True))
    log_file = ws.attestations / "log.jsonl"
    log_file.write_bytes(b'{"index": 0, "garbage": true}\n')
    result = api.make_plan(workspace=ws)
    desired = dict(desired_site(ws.inventory))
    with pytest.raises(VerificationError, match="refusing to append to a damaged log") as exc:
        api.apply_plan(workspace=ws.using(executor=ScriptedExecutor(desired), signer=OPERATOR), plan=result.plan,
                       decision=result.decision, expected=result.bindings)
    assert exc.value.step == "envelope-format"
    assert not ws.state_file.exists(), "nothing was applied"
    assert log_file.read_bytes() == b'{"index": 0, "garbage": true}\n'


def test_plan_records_its_decision_with_an_encrypted_operator_key(tmp_path: Path, cli: Callable[..., CliResult],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(tmp_path)
    key = tmp_path / "enc.key"
    write_keypair(OPERATOR, key, b"s3cret")
    monkeypatch.delenv("SOVKIT_KEY_PASSPHRASE", raising=False)
    refused = cli("plan", site.path, "--key", key)
    assert refused.code == 1 and "encrypted and no passphrase" in refused.err
    assert not (site.root / ".sovkit" / "attestations" / "log.jsonl").exists()
    monkeypatch.setenv("SOVKIT_KEY_PASSPHRASE", "s3cret")
    r = cli("plan", site.path, "--key", key)
    assert r.code == 0, r.text
    (entry,) = read_log(site.root / ".sovkit" / "attestations")
    assert entry.predicate_type == POLICY_DECISION_PREDICATE and entry.predicate["operation"] == "plan"
    assert entry.envelope.signatures[0].keyid == OPERATOR.keyid
    (site.root / ".sovkit" / "keys" / "operator.key").unlink()
    warned = cli("plan", site.path)
    assert warned.code == 0 and "the policy decision was not attested" in warned.err
    assert len(read_log(site.root / ".sovkit" / "attestations")) == 1


def test_check_records_its_decision_allowed_or_denied(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)
    log_dir = site.root / ".sovkit" / "attestations"
    allowed = cli("check", site.path)
    assert allowed.code == 0, allowed.text
    (entry,) = read_log(log_dir)
    assert entry.predicate_type == POLICY_DECISION_PREDICATE
    assert entry.predicate["operation"] == "check" and entry.predicate["allowed"] is True
    # a denial is evidence too: it is recorded before the command exits 3
    site.data["data_stores"].append({"name": "offshore", "kind": "s3", "jurisdiction": "US"})
    site.save()
    denied = cli("check", site.path)
    assert denied.code == 3, denied.text
    last = read_log(log_dir)[-1]
    assert last.predicate["operation"] == "check" and last.predicate["allowed"] is False
    assert any(f["id"].startswith("RES") for f in last.predicate["findings"])
