"""The library entry points the CLI calls. Each returns data; none prints or exits."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sovkit.attest import log as attest_log
from sovkit.attest.predicates import PROVISION_PREDICATE, PolicyDecisionPredicate, policy_decision_statement
from sovkit.attest.provenance import ApplyContext, check_subjects, provision_statements
from sovkit.audit.drift import write_refresh_record
from sovkit.catalog import load_catalog
from sovkit.digest import sha256_file
from sovkit.errors import PolicyDenied, SovkitError
from sovkit.inventory import LoadedInventory, load_inventory
from sovkit.inventory.ansible import to_ansible_inventory
from sovkit.inventory.capacity import RackPower, rack_power
from sovkit.inventory.models import Site
from sovkit.plan.desired import DesiredHost, desired_site, pinned_artifacts
from sovkit.plan.diff import diff
from sovkit.plan.model import Change, Plan
from sovkit.plan.planfile import Bindings, SavedPlan, make_saved_plan, read_plan, write_plan
from sovkit.plan.planfile import check_bindings as check_bindings_values
from sovkit.policy.api import PolicyDecision, PolicyEngine, evaluate_policy, policy_pack_digest
from sovkit.policy.input import build_input
from sovkit.provision.ansible_executor import AnsibleRunnerExecutor
from sovkit.provision.apply import ApplyReport, execute_plan, run_recording
from sovkit.provision.executor import ExecEvent, Executor
from sovkit.provision.hostvars import rollback_target
from sovkit.provision.observe import observe, with_findings
from sovkit.provision.preflight import Preflight
from sovkit.signing.keys import PublicKey, Signer
from sovkit.state.models import HostRecord, LockInfo, State, now
from sovkit.state.store import LocalStateStore


def validate(path: Path | str) -> LoadedInventory:
    """Load and fully check an inventory; raises InventoryError listing every problem."""
    return load_inventory(path)


def inventory_schema() -> dict[str, Any]:
    """JSON Schema of the inventory (what editors and CI validate YAML against)."""
    schema = Site.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://sovkit.dev/schemas/site-v1.json"
    schema["title"] = "sovkit Site inventory (sovkit.dev/v1)"
    return schema


def site_power(loaded: LoadedInventory) -> list[RackPower]:
    return rack_power(loaded.site, load_catalog())


def export_ansible(loaded: LoadedInventory) -> dict[str, Any]:
    keys = {h.name: str(loaded.resolve(h.ssh.key)) for h in loaded.site.hosts if h.ssh.key}
    return to_ansible_inventory(loaded.site, keys)


# --- plan / apply / refresh -------------------------------------------------------------------------------


@dataclass
class Workspace:
    """Where sovkit keeps a site's local state: ``.sovkit/`` beside the inventory unless told otherwise."""

    inventory: LoadedInventory
    directory: Path

    @classmethod
    def open(cls, inventory: Path | str, state_dir: Path | None = None) -> Workspace:
        loaded = load_inventory(inventory)
        return cls(loaded, (state_dir or loaded.root / ".sovkit").resolve())

    @property
    def store(self) -> LocalStateStore:
        return LocalStateStore(self.directory)

    @property
    def attestations(self) -> Path:
        """The append-only attestation log directory."""
        return attest_log.log_dir_for(self.directory)

    @property
    def runs(self) -> Path:
        path = self.directory / "runs"
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class PlanResult:
    plan: Plan
    decision: PolicyDecision
    bindings: Bindings
    drift: Plan | None = None
    unreachable: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _logged_applies(log: Path) -> int:
    """How many provision attestations (applies, rollbacks) the log holds; unreadable lines are not counted."""
    try:
        lines = log.read_bytes().splitlines()
    except OSError:
        return 0
    count = 0
    for line in lines:
        try:
            payload = json.loads(base64.b64decode(json.loads(line)["envelope"]["payload"]))
        except (ValueError, KeyError, TypeError):
            continue
        count += isinstance(payload, dict) and payload.get("predicateType") == PROVISION_PREDICATE
    return count


def missing_state_warning(ws: Workspace) -> str | None:
    """A missing state.json where a backup or attestations show earlier applies: plan would reinstall everything."""
    if ws.store.path.exists():
        return None
    backup = ws.directory / "state.json.backup"
    log = ws.attestations / attest_log.LOG_FILE
    seen = [str(backup)] if backup.is_file() else []
    applies = _logged_applies(log)
    if applies:
        seen.append(f"{log} ({applies} provision attestation{'s' if applies != 1 else ''})")
    if not seen:
        return None
    restore = f"`cp {backup} {ws.store.path}` (the previous serial), then " if backup.is_file() else ""
    return (f"{ws.store.path} is missing but {' and '.join(seen)} show(s) earlier applies: this plan treats "
            f"every host as empty. Restore the state with {restore}`sovkit refresh` to read back what the hosts "
            "really have, and plan again")


def _bindings(ws: Workspace, state: State, desired: dict[str, DesiredHost], plan: Plan,
              extra_policies: Path | None) -> Bindings:
    touched = {c.host for c in plan.changes}
    needed = pinned_artifacts({h: d for h, d in desired.items() if h in touched})
    store = ws.inventory.artifact_root
    actual = {p: (sha256_file(store / p) if (store / p).is_file() else "missing") for p in needed}
    return Bindings(state_lineage=state.lineage, state_serial=state.serial, inventory_digest=ws.inventory.digest,
                    policy_pack_digest=policy_pack_digest(extra_policies), artifact_digests=actual)


def make_plan(
    ws: Workspace,
    refresh: bool = False,
    executor: Executor | None = None,
    extra_policies: Path | None = None,
    policy_engine: PolicyEngine | None = None,
    on_event: Callable[[ExecEvent], None] = lambda e: None,
) -> PlanResult:
    """Desired (inventory) vs recorded or observed state, with the policy decision. Changes nothing."""
    state = ws.store.read()
    desired = desired_site(ws.inventory)
    decision = evaluate_policy(ws.inventory, state, extra_policies, policy_engine)
    observed = state.hosts
    drift = None
    unreachable: dict[str, str] = {}
    if refresh:
        obs = observe(ws.inventory, desired, state.hosts, executor or AnsibleRunnerExecutor(), ws.runs, on_event)
        unreachable = obs.unreachable
        observed = {**state.hosts, **obs.hosts}
        drift = with_findings(recorded_drift(ws.inventory.site.metadata.name, state.hosts, obs.hosts),
                              obs.untrusted)
    plan = diff(ws.inventory.site.metadata.name, desired, observed)
    warning = missing_state_warning(ws)
    return PlanResult(plan, decision, _bindings(ws, state, desired, plan, extra_policies), drift, unreachable,
                      [warning] if warning else [])


def recorded_drift(site: str, recorded: dict[str, HostRecord], observed: dict[str, HostRecord]) -> Plan:
    """What changed on the hosts behind sovkit's back: observed vs recorded, as changes that would restore it."""
    changes: list[Change] = []
    for host, seen in observed.items():
        rec = recorded.get(host)
        if rec is None:
            continue
        for kind, fw in rec.firmware.items():
            now_fw = seen.firmware.get(kind)
            got = {d: r.firmware for d, r in now_fw.devices.items()} if now_fw else {}
            want = {d: r.firmware for d, r in fw.devices.items()}
            if got != want:
                changes.append(Change(host=host, component="firmware", name=kind, action="update",
                                      reason=f"devices report {got or 'nothing'}, recorded {want}"))
        for name, rt in rec.runtimes.items():
            now_rt = seen.runtimes.get(name)
            if now_rt is None or now_rt.version != rt.version:
                changes.append(Change(host=host, component="runtime", name=name, action="update",
                                      reason=f"host has {now_rt.version if now_rt else 'nothing'}, "
                                             f"recorded {rt.version}"))
        for name, m in rec.models.items():
            now_m = seen.models.get(name)
            if now_m is None:
                changes.append(Change(host=host, component="model", name=name, action="update",
                                      reason="model missing on the host"))
                continue
            bad = sorted(f for f in m.files if now_m.files.get(f) != m.files[f])
            if now_m.version != m.version or bad:
                what = f"active version {now_m.version}, recorded {m.version}" if now_m.version != m.version \
                    else f"file digests differ from the recorded ones: {', '.join(bad)}"
                changes.append(Change(host=host, component="model", name=name, action="update", reason=what))
        for name, s in rec.serving.items():
            now_s = seen.serving.get(name)
            if now_s is None or now_s.config_sha256 != s.config_sha256:
                changes.append(Change(host=host, component="serving", name=name, action="update",
                                      reason="serving config on the host differs from the recorded one"))
    return Plan(site=site, changes=tuple(changes))


def save_plan(ws: Workspace, result: PlanResult, path: Path, signer: Signer) -> SavedPlan:
    saved = make_saved_plan(ws.inventory.files[0] if len(ws.inventory.files) == 1 else ws.inventory.root,
                            result.bindings, result.plan, result.decision.summary())
    write_plan(path, saved, signer)
    return saved


def load_saved_plan(path: Path, key: PublicKey, state_dir: Path | None = None) -> tuple[Workspace, SavedPlan]:
    saved = read_plan(path, key)
    return Workspace.open(saved.inventory, state_dir), saved


def apply_plan(
    ws: Workspace,
    plan: Plan,
    decision: PolicyDecision,
    expected: Bindings | None = None,
    extra_policies: Path | None = None,
    executor: Executor | None = None,
    on_event: Callable[[ExecEvent], None] = lambda e: None,
    signer: Signer | None = None,
) -> ApplyReport:
    """Apply under the state lock; refuses a denied decision or (for saved plans) any stale binding.

    With a ``signer``, one provision attestation per host the plan touched is appended to the
    attestation log before the lock is released (the CLI always passes the operator key).
    """
    if not decision.allowed:
        raise PolicyDenied("policy denies this inventory: nothing was applied",
                           "run `sovkit check` to see the denials, fix them, and plan again")
    with ws.store.lock("apply"):
        state = ws.store.read()
        desired = desired_site(ws.inventory)
        if expected is not None:
            check_bindings_for(ws, state, desired, plan, expected, extra_policies)
        if signer is not None:
            attest_log.check_appendable(ws.attestations)
        report = execute_plan(ws.inventory, plan, desired, ws.store, executor or AnsibleRunnerExecutor(), ws.runs,
                              on_event)
        if signer is not None:
            summary = decision.summary()
            pack = expected.policy_pack_digest if expected is not None else policy_pack_digest(extra_policies)
            ctx = ApplyContext(operation="apply", site=ws.inventory.site.metadata.name, plan=plan,
                               inventory_digest=ws.inventory.digest, policy_pack_digest=pack,
                               policy_allowed=decision.allowed, findings=list(summary.get("findings", [])))
            try:
                attest_log.append(ws.attestations, provision_statements(report, ctx, plan.hosts(), desired), signer)
            except OSError as exc:
                raise SovkitError(
                    f"apply {report.run_id} completed and its state is recorded (serial {report.state.serial}), "
                    f"but its attestations could not be written to {ws.attestations}: {exc.strerror}",
                    "free space there; the log is unchanged, so `sovkit attest verify` shows no entry for this "
                    "apply") from exc
        return report


def check_bindings_for(ws: Workspace, state: State, desired: dict[str, DesiredHost], plan: Plan,
                       expected: Bindings, extra_policies: Path | None) -> None:
    current = _bindings(ws, state, desired, plan, extra_policies)
    check_bindings_values(expected, current)


def refresh_state(ws: Workspace, executor: Executor | None = None,
                  on_event: Callable[[ExecEvent], None] = lambda e: None) -> tuple[Plan, dict[str, str], State]:
    """Read back the hosts, record what is really there, and return the drift found."""
    with ws.store.lock("refresh"):
        state = ws.store.read()
        desired = desired_site(ws.inventory)
        obs = observe(ws.inventory, desired, state.hosts, executor or AnsibleRunnerExecutor(), ws.runs, on_event)
        drift = with_findings(recorded_drift(ws.inventory.site.metadata.name, state.hosts, obs.hosts),
                              obs.untrusted)
        state.hosts.update(obs.hosts)
        state.site = ws.inventory.site.metadata.name
        new = ws.store.write(state)
        write_refresh_record(ws.directory, drift, obs.unreachable)  # the audit reports the last drift found
    return drift, obs.unreachable, new


def rollback(
    ws: Workspace,
    model: str,
    hosts: list[str] | None = None,
    executor: Executor | None = None,
    on_event: Callable[[ExecEvent], None] = lambda e: None,
    signer: Signer | None = None,
) -> ApplyReport:
    """Switch ``model`` back to the version kept as ``previous`` on each host (all hosts that have one).

    An emergency lever: the inventory still pins the newer version, so the next
    plan shows the update again until the inventory is changed too.
    """
    with ws.store.lock("rollback"):
        state = ws.store.read()
        desired = desired_site(ws.inventory)
        candidates = [h for h, rec in state.hosts.items()
                      if model in rec.models and rec.models[model].previous and h in desired]
        chosen = [h for h in candidates if hosts is None or h in hosts]
        if not chosen:
            raise SovkitError(f"no host has a previous version of model {model!r} recorded",
                              "rollback needs an earlier apply of another version on the host")
        if signer is not None:
            attest_log.check_appendable(ws.attestations)
        known = ws.directory / "known_hosts"
        targets = [rollback_target(ws.inventory, desired[h], model, state.hosts[h], known) for h in chosen]
        started = now()
        new_state, run_id, outcomes, records = run_recording(
            "rollback.yml", targets, state, ws.store, executor or AnsibleRunnerExecutor(), ws.runs, on_event, {})
        report = ApplyReport(run_id=run_id, started=started, finished=now(), hosts=outcomes, state=new_state,
                             preflight=Preflight(), records=records)
        if signer is not None:
            ctx = ApplyContext(operation="rollback", site=ws.inventory.site.metadata.name, plan=None,
                               inventory_digest=ws.inventory.digest, policy_pack_digest=policy_pack_digest(None),
                               policy_allowed=True, findings=[])
            attest_log.append(ws.attestations, provision_statements(report, ctx, chosen, desired), signer)
    return report


def check_policy(ws: Workspace, extra_policies: Path | None = None, policy_engine: PolicyEngine | None = None
                 ) -> PolicyDecision:
    """The policy decision for the inventory (and its recorded state, when there is one). Changes nothing."""
    return evaluate_policy(ws.inventory, ws.store.read(), extra_policies, policy_engine)


def policy_input(ws: Workspace) -> dict[str, Any]:
    """The exact input document the pack is evaluated on (docs/policy-input.md)."""
    return build_input(ws.inventory, ws.store.read())


def decision_from_summary(summary: dict[str, Any]) -> PolicyDecision:
    """The decision recorded in a saved plan (the policy pack digest binding proves it is still current)."""
    return PolicyDecision.from_summary(summary)


def force_unlock(ws: Workspace, lock_id: str) -> LockInfo:
    return ws.store.force_unlock(lock_id)


# --- attestations --------------------------------------------------------------------------------------------


def record_policy_decision(ws: Workspace, decision: PolicyDecision, signer: Signer, operation: str = "check",
                           extra_policies: Path | None = None) -> attest_log.LogEntry:
    """Append a policy-decision attestation (every `check` and `plan` records one) and return its entry."""
    summary = decision.summary()
    predicate = PolicyDecisionPredicate(
        operation=operation, site=ws.inventory.site.metadata.name, inventory_digest=ws.inventory.digest,
        pack_digest=policy_pack_digest(extra_policies), allowed=bool(summary.get("allowed", decision.allowed)),
        findings=list(summary.get("findings", [])), engine=summary.get("engine"), time=now(),
    )
    return attest_log.append(ws.attestations, [policy_decision_statement(predicate)], signer)[0]


@dataclass
class AttestationTarget:
    """Where to verify: the log, and (when known) the state and artifact store to check subjects against."""

    log_dir: Path
    state: State | None
    artifact_root: Path | None


def attestation_target(path: Path, state_dir: Path | None = None) -> AttestationTarget:
    """``path`` is a log directory, a state directory holding ``attestations/``, or an inventory."""
    if (path / attest_log.LOG_FILE).exists() or (path / attest_log.HEAD_FILE).exists():
        state_file = path.parent / "state.json"
        state = LocalStateStore(path.parent).read() if state_file.exists() else None
        return AttestationTarget(path, state, None)
    if path.is_dir() and (path / attest_log.LOG_DIRNAME).is_dir():
        store = LocalStateStore(path)
        return AttestationTarget(path / attest_log.LOG_DIRNAME, store.read() if store.path.exists() else None, None)
    # files are not checked here: a changed store file must reach the subjects step, not stop the load
    loaded = load_inventory(path, check_files=False)
    ws = Workspace(loaded, (state_dir or loaded.root / ".sovkit").resolve())
    return AttestationTarget(ws.attestations, ws.store.read() if ws.store.path.exists() else None,
                             ws.inventory.artifact_root)


def verify_attestations(target: AttestationTarget, keys: list[PublicKey]) -> attest_log.LogVerification:
    """The log's own steps, then subjects against the recorded state (and store files, when known)."""
    result = attest_log.verify_log(target.log_dir, keys)
    if result.entries or result.ok:
        result.steps.append(check_subjects(result.entries, target.state, target.artifact_root))
    return result
