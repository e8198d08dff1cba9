"""sovkit's library facade: the one module the CLI (and any other front end) calls.

Every function takes keyword-only arguments and returns data; none prints or exits. Operations on a
site take a :class:`~sovkit.workspace.Workspace` (open one with :func:`open_workspace`), which carries
the adapters (state store, executor, policy engine, signer). Results with a ``--json`` form have an
``output()`` method returning a pydantic model; the CLI dumps that model as it is.

Besides functions and result types, ``__all__`` re-exports the few values the CLI needs:
``PASSPHRASE_ENV`` (the environment variable holding a key passphrase), ``ALGORITHMS`` and
``Algorithm`` (the signing-key algorithms, as a list and as a type), ``STEP_TITLES`` (names of
the attestation-verification steps), ``PinPrompt`` (the callback a front end passes to ask for a PKCS#11
token PIN), ``Verb`` (the verbs `sovkit fleet` runs at a site) and ``bundles`` (the air-gap bundle entry
points, ``sovkit.bundle.api``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from sovkit import identifiers, workflow
from sovkit.agent import site_summary
from sovkit.attest import log as attest_log
from sovkit.attest.log import STEP_TITLES, LogEntry, LogVerification, read_log
from sovkit.attest.provenance import check_subjects
from sovkit.bundle import api as bundles
from sovkit.bundle.errors import BundleInvalid
from sovkit.bundle.events import BundleEvent
from sovkit.bundle.volumes import parse_size
from sovkit.catalog import load_catalog
from sovkit.components.host import desired_site
from sovkit.demo import DemoCommand, DemoReport, DemoStep, demo_commands, prepare_demo
from sovkit.errors import MonitorError, PlannerError, PolicyError, SovkitError, StateError
from sovkit.fleet.models import LoadedFleet
from sovkit.fleet.models import load_fleet as _load_fleet
from sovkit.fleet.runner import SiteResult
from sovkit.fleet.runner import run_fleet as _run_fleet
from sovkit.fleet.summary import SiteSummary, Verb, sign_summary
from sovkit.inventory import LoadedInventory, load_inventory
from sovkit.inventory.ansible import to_ansible_inventory
from sovkit.inventory.capacity import RackPower, host_power, rack_power
from sovkit.inventory.models import Site
from sovkit.monitor.check import CheckReport, CompliancePredicate, Monitor
from sovkit.monitor.loop import parse_interval as _parse_interval
from sovkit.monitor.loop import run_checks
from sovkit.monitor.metrics import MetricsServer, MonitorMetrics
from sovkit.monitor.metrics import serve_metrics as _serve_metrics
from sovkit.plan.model import Change, Plan
from sovkit.plan.planfile import Bindings, SavedPlan, looks_like_plan, make_saved_plan, read_plan, write_plan
from sovkit.plan.rollout import Rollout
from sovkit.plan.rollout import rollout_from_options as _rollout_from_options
from sovkit.planner import service as _planner
from sovkit.planner.calibration import CalibrationFile, load_calibrations
from sovkit.planner.forecast import RequestForecast, SitePredictor, request_forecast, site_predictor
from sovkit.planner.perf import RooflinePredictor, Workload
from sovkit.planner.placement import ServingPlanOutput, parse_prices, plan_and_place
from sovkit.planner.search import LINK_GBS, LengthBin, LinkKind, PlanRequest, read_histogram
from sovkit.planner.service import PredictOutput
from sovkit.policy.api import (
    PolicyBundleFile,
    PolicyDecision,
    PolicyPack,
    evaluate_policy,
    export_policy_bundle,
    load_policy_bundle,
)
from sovkit.policy.engine import PolicyEngine
from sovkit.policy.input import build_input, input_schema
from sovkit.policy.opa import OpaServerEngine
from sovkit.policy.testing import RegoTestResult, run_tests
from sovkit.provision.apply import ApplyReport
from sovkit.provision.discover import DiscoveredHost, DiscoverOptions, discover_hosts, starting_inventory
from sovkit.provision.endpoints import Answer, EndpointStatus
from sovkit.provision.endpoints import send_request as _send_request
from sovkit.provision.endpoints import serving_status as _serving_status
from sovkit.provision.executor import ExecEvent, Executor
from sovkit.results import (
    AttestationEntryView,
    AuditWritten,
    BundleCreated,
    BundleImported,
    InventoryInvalid,
    InventoryShow,
    InventoryValid,
)
from sovkit.signing import keyring as _keyring
from sovkit.signing.keyring import Keyring
from sovkit.signing.keys import (
    ALGORITHMS,
    PASSPHRASE_ENV,
    Algorithm,
    LocalSigner,
    PublicKey,
    Signer,
    generate_key,
    key_info,
    load_public_keys,
)
from sovkit.signing.statement import Statement, Subject
from sovkit.signing.steps import Verification
from sovkit.state.models import HistoryEntry, LockInfo, now
from sovkit.state.store import LocalStateStore, Moved, StateStore, move_state
from sovkit.workflow import (
    ApplyOutcome,
    ApplyOutput,
    PlanOutput,
    PlanResult,
    PlanView,
    RefreshOutput,
    RefreshResult,
)
from sovkit.workspace import Workspace, ansible_executor, state_url_for

if TYPE_CHECKING:
    from sovkit.audit.pack import AuditPack
    from sovkit.signing.pkcs11 import GeneratedTokenKey
    from sovkit.state.postgres import SiteRow

__all__ = [
    "ALGORITHMS",
    "PASSPHRASE_ENV",
    "STEP_TITLES",
    "Algorithm",
    "Answer",
    "ApplyOutcome",
    "ApplyOutput",
    "ApplyReport",
    "AttestationEntryView",
    "AttestationTarget",
    "AuditWritten",
    "BundleCreated",
    "BundleEvent",
    "BundleImported",
    "BundleInvalid",
    "CalibrationFile",
    "Change",
    "CheckReport",
    "CompliancePredicate",
    "DemoCommand",
    "DemoReport",
    "DemoStep",
    "DiscoverOptions",
    "Discovered",
    "EndpointStatus",
    "ExecEvent",
    "Executor",
    "InventoryInvalid",
    "InventoryShow",
    "InventoryValid",
    "KeyChange",
    "Keyring",
    "LoadedInventory",
    "LocalSigner",
    "LockInfo",
    "LogEntry",
    "LogVerification",
    "MetricsServer",
    "Monitor",
    "MonitorMetrics",
    "PinPrompt",
    "Plan",
    "PlanOutput",
    "PlanResult",
    "PlanView",
    "PolicyBundleFile",
    "PolicyDecision",
    "PolicyEngine",
    "PredictOutput",
    "PublicKey",
    "RackPower",
    "RefreshOutput",
    "RefreshResult",
    "RegoTestResult",
    "RequestForecast",
    "Rollout",
    "SavedPlan",
    "ServingPlanOutput",
    "Signer",
    "SiteResult",
    "SiteSummary",
    "StateStore",
    "Verb",
    "Verification",
    "Workload",
    "Workspace",
    "apply_inventory",
    "apply_plan",
    "apply_saved_plan",
    "attestation_target",
    "build_audit_pack",
    "bundles",
    "check_policy",
    "decision_from_summary",
    "default_keyring_path",
    "demo_commands",
    "discover_site",
    "export_ansible",
    "export_policy_bundle",
    "fleet_agent",
    "force_unlock",
    "generate_key",
    "generate_token_key",
    "host_power",
    "input_schema",
    "inventory_schema",
    "is_key_uri",
    "key_info",
    "load_catalog",
    "load_fleet",
    "load_keyring",
    "load_public_key",
    "load_public_keys",
    "load_saved_plan",
    "load_signer_file",
    "load_signer_ref",
    "looks_like_plan",
    "make_plan",
    "monitor_metrics",
    "opa_engine",
    "open_monitor",
    "open_policy_bundle",
    "open_workspace",
    "parse_interval",
    "parse_size",
    "plan_serving",
    "policy_bundle_keys",
    "policy_input",
    "prepare_demo",
    "read_attestations",
    "record_policy_decision",
    "refresh",
    "revoke_key",
    "rollback",
    "rollout_from_options",
    "rotate_key",
    "run_fleet",
    "run_monitor",
    "run_policy_tests",
    "save_plan",
    "serve_monitor_metrics",
    "serving_calibrate",
    "serving_forecast",
    "serving_predict",
    "serving_request",
    "serving_status",
    "serving_stop",
    "site_power",
    "state_history",
    "state_move",
    "state_sites",
    "validate",
    "verify_attestations",
    "verify_audit_pack",
]

OnEvent = Callable[[ExecEvent], None]


def _quiet(event: ExecEvent) -> None:
    """No progress to show."""


# --- inventory -------------------------------------------------------------------------------------------------


def open_workspace(*, inventory: Path | str, state_dir: Path | None = None, executor: Executor | None = None,
                   state_store: StateStore | None = None, policy_engine: PolicyEngine | None = None,
                   signer: Signer | None = None, extra_policies: Path | None = None,
                   policy_bundle: Path | None = None, bundle_keys: list[Path] | None = None,
                   state_url: str | None = None, lock_timeout: float = 0.0) -> Workspace:
    """Load the inventory and wire the adapters (the real ones for any not passed).

    ``policy_bundle``: evaluate the pack of this OPA bundle instead of the shipped pack, once it has verified
    (:func:`open_policy_bundle`); nothing is evaluated from a bundle that does not. ``state_url`` keeps the
    state in PostgreSQL (docs/state.md); ``lock_timeout`` waits that many seconds for a held state lock.
    """
    ws = Workspace.open(inventory, state_dir, executor=executor, state_store=state_store,
                        policy_engine=policy_engine, signer=signer, extra_policies=extra_policies,
                        state_url=state_url, lock_timeout=lock_timeout)
    if policy_bundle is not None:
        if extra_policies is not None:
            raise PolicyError("--policies and --policy-bundle cannot be combined",
                              "a bundle holds the whole pack: build it with `sovkit policy bundle --policies DIR`")
        ws.extra_policies = open_policy_bundle(path=policy_bundle, keys=bundle_keys, inventory=ws.inventory)
    elif bundle_keys:
        raise PolicyError("--bundle-key needs --policy-bundle", "pass the bundle the key verifies")
    return ws


# --- pbundle: signed policy bundles ---


def policy_bundle_keys(*, inventory: LoadedInventory) -> list[PublicKey]:
    """The keys the inventory trusts to sign policy bundles (``trust_roots.policy_bundles``)."""
    return load_public_keys([inventory.resolve(k.public_key) for k in inventory.site.trust_roots.policy_bundles])


def open_policy_bundle(*, path: Path, keys: list[Path] | None = None,
                       inventory: LoadedInventory | None = None) -> PolicyPack:
    """The pack of a policy bundle, verified first: against ``keys`` (public key files) when given, else the
    inventory's ``trust_roots.policy_bundles``. With any key configured the bundle must be signed by one of them
    and every file must match its signed digest; a signed bundle with no key configured is refused too."""
    trusted = load_public_keys(keys) if keys else (policy_bundle_keys(inventory=inventory) if inventory else [])
    return load_policy_bundle(path, trusted)


# --- end pbundle ---


def validate(*, path: Path | str) -> LoadedInventory:
    """Load and fully check an inventory; raises InventoryError listing every problem."""
    return load_inventory(path)


@dataclass(frozen=True)
class Discovered:
    """`sovkit init --discover`: the site.yaml written and the hosts found."""

    path: Path
    hosts: list[DiscoveredHost]


def discover_site(*, directory: Path, hosts: list[str], options: DiscoverOptions, name: str | None = None,
                  country: str | None = None, force: bool = False, executor: Executor | None = None,
                  on_event: OnEvent = _quiet) -> Discovered:
    """Read the hosts' facts and write ``directory/site.yaml``: a starting inventory whose TODO values must be
    filled before it validates. Refuses to overwrite an existing site.yaml unless ``force``."""
    target = directory / "site.yaml"
    if target.exists() and not force:
        raise SovkitError(f"{target} already exists: nothing was written", "choose another directory or pass --force")
    if executor is None:
        executor = ansible_executor()
    found = discover_hosts(hosts, options, executor, directory / ".sovkit", on_event)
    site_name = name or directory.resolve().name.lower()
    text = starting_inventory(site_name, found, options, directory, country)
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return Discovered(target, found)


def inventory_schema() -> dict[str, Any]:
    """JSON Schema of the inventory (what editors and CI validate YAML against)."""
    schema = Site.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://sovkit.dev/schemas/site-v1.json"
    schema["title"] = "sovkit Site inventory (sovkit.dev/v1)"
    return schema


def site_power(*, inventory: LoadedInventory) -> list[RackPower]:
    """Power per rack against its budget, from the hardware catalog."""
    return rack_power(inventory.site, load_catalog())


def export_ansible(*, inventory: LoadedInventory) -> dict[str, Any]:
    """The inventory as an Ansible inventory (hosts, groups, SSH keys resolved to paths)."""
    keys = {h.name: str(inventory.resolve(h.ssh.key)) for h in inventory.site.hosts if h.ssh.key}
    return to_ansible_inventory(inventory.site, keys)


# --- plan / apply / refresh / rollback ----------------------------------------------------------------------------


def make_plan(*, workspace: Workspace, refresh: bool = False, on_event: OnEvent = _quiet,
              rollout: Rollout | None = None) -> PlanResult:
    """Desired (inventory) vs recorded (or, with ``refresh``, observed) state, with the policy decision.

    ``rollout`` rides in the plan; its limit keeps the changes on the hosts it selects.
    """
    return workflow.make_plan(workspace, refresh, on_event, rollout)


def rollout_from_options(*, limit: str | None = None, batch_size: str | None = None, canary: int | None = None,
                         max_fail_percent: int | None = None, forks: int | None = None) -> Rollout:
    """Rollout controls from the CLI's options; one PlanError naming the option for a bad value."""
    return _rollout_from_options(limit=limit, batch_size=batch_size, canary=canary,
                                 max_fail_percent=max_fail_percent, forks=forks)


def save_plan(*, workspace: Workspace, result: PlanResult, path: Path) -> SavedPlan:
    """Sign ``result`` with the workspace signer and write it to ``path`` (for `apply <plan>`)."""
    if workspace.signer is None:
        raise SovkitError("a saved plan must be signed", "pass the operator key (--key)")
    inv = workspace.inventory
    saved = make_saved_plan(inv.files[0] if len(inv.files) == 1 else inv.root, result.bindings, result.plan,
                            result.decision.summary())
    write_plan(path, saved, workspace.signer)
    return saved


def load_saved_plan(*, path: Path, key: PublicKey, state_dir: Path | None = None, state_url: str | None = None,
                    lock_timeout: float = 0.0) -> tuple[Workspace, SavedPlan]:
    """Verify a saved plan's signature and open the workspace of the inventory it was made from."""
    saved = read_plan(path, key)
    return Workspace.open(saved.inventory, state_dir, state_url=state_url, lock_timeout=lock_timeout), saved


def apply_plan(*, workspace: Workspace, plan: Plan, decision: PolicyDecision,
               expected: Bindings | None = None, on_event: OnEvent = _quiet) -> ApplyReport:
    """Apply ``plan`` under the state lock (refusing a denied decision or a stale binding); attests with a signer."""
    return workflow.apply_plan(workspace, plan, decision, expected, on_event)


def apply_saved_plan(*, workspace: Workspace, saved: SavedPlan, on_event: OnEvent = _quiet) -> ApplyOutcome:
    """Apply a verified saved plan: the signed plan is the approval, nothing is asked."""
    return workflow.apply_saved_plan(workspace, saved, on_event)


def apply_inventory(*, workspace: Workspace, confirm: Callable[[PlanResult], bool], refresh: bool = False,
                    on_plan_event: OnEvent = _quiet, on_event: OnEvent = _quiet, rollout: Rollout | None = None
                    ) -> ApplyOutcome:
    """Plan, let ``confirm`` show the plan and answer, then apply (``confirmed`` is False when it said no)."""
    return workflow.apply_inventory(workspace, confirm, refresh, on_plan_event, on_event, rollout)


def refresh(*, workspace: Workspace, on_event: OnEvent = _quiet) -> RefreshResult:
    """Read back the hosts, record what is there, and (with a signer) attest the drift found."""
    return workflow.refresh_state(workspace, on_event)


def rollback(*, workspace: Workspace, model: str, hosts: list[str] | None = None,
             on_event: OnEvent = _quiet) -> ApplyReport:
    """Switch ``model`` back to its recorded ``previous`` version (on ``hosts``, or every host that has one)."""
    return workflow.rollback(workspace, model, hosts, on_event)


def serving_status(*, workspace: Workspace, timeout: float = 10.0) -> list[EndpointStatus]:
    """Every serving process the inventory places, probed from here: health, latency, the model it serves."""
    return _serving_status(desired_site(workspace.inventory), workspace.store.read(), timeout)


def serving_request(*, workspace: Workspace, prompt: str, target: str | None = None,
                    max_tokens: int = 16) -> Answer:
    """One streamed completion through a serving group's router (or a plain deployment), timed."""
    return _send_request(desired_site(workspace.inventory), prompt, target, max_tokens)


def serving_forecast(*, workspace: Workspace, prompt: str, target: str | None = None) -> RequestForecast | None:
    """The planner's prediction for the request `serving_request` sends (same prompt and unit, batch 1), or None
    when the unit's model has no config or its chip is unknown to the planner."""
    inv = workspace.inventory
    return request_forecast(SitePredictor(inv.site, inv.root, load_catalog(), site_predictor()), prompt, target)


def serving_stop(*, workspace: Workspace, hosts: list[str] | None = None, on_event: OnEvent = _quiet
                 ) -> ApplyReport:
    """Stop the recorded serving processes (on ``hosts``, or everywhere); `apply` starts them again."""
    return workflow.stop_serving(workspace, hosts, on_event)


def serving_predict(*, model_config: str | Path, accelerator: str, work: Workload,
                    calibration: Path | None = None) -> PredictOutput:
    """Predict prefill/decode time, memory fit, power and tokens per joule for a model on a catalog kind."""
    return _planner.predict(model_config=model_config, accelerator=accelerator, work=work, calibration=calibration)


def serving_calibrate(*, measurements: Path, write: Path | None = None, per_tp: bool = False) -> CalibrationFile:
    """Fit the performance model's efficiency factors to measured points (optionally writing the file)."""
    return _planner.calibrate_measurements(measurements=measurements, write=write, per_tp=per_tp)


def check_policy(*, workspace: Workspace) -> PolicyDecision:
    """The policy decision for the inventory (and its recorded state, when there is one). Changes nothing."""
    return evaluate_policy(workspace.inventory, workspace.store.read(), workspace.extra_policies,
                           workspace.policy_engine)


def policy_input(*, workspace: Workspace) -> dict[str, Any]:
    """The exact input document the pack is evaluated on (docs/policy-input.md)."""
    return build_input(workspace.inventory, workspace.store.read())


def decision_from_summary(*, summary: dict[str, Any]) -> PolicyDecision:
    """The decision recorded in a saved plan (the policy pack digest binding proves it is still current)."""
    return PolicyDecision.from_summary(summary)


def force_unlock(*, workspace: Workspace, lock_id: str) -> LockInfo:
    """Remove a state lock left by a crashed run (only the one with this id)."""
    return workspace.store.force_unlock(lock_id)


def record_policy_decision(*, workspace: Workspace, decision: PolicyDecision, operation: str = "check") -> LogEntry:
    """Append a policy-decision attestation (every `check` and `plan` records one), signed by the workspace signer."""
    return workflow.record_policy_decision(workspace, decision, operation)


def run_policy_tests(*, directory: Path | None = None) -> list[RegoTestResult]:
    """Run the Rego unit tests of the built-in pack (and of ``directory``)."""
    return run_tests(directory)


def opa_engine(*, url: str, token: str | None = None, timeout: float = 5.0) -> PolicyEngine:
    """A policy engine that asks an OPA server instead of the embedded evaluator."""
    return OpaServerEngine(url, token=token, timeout=timeout)


# --- pgstate: shared state (PostgreSQL), history, pull/push -------------------------------------------------------


def state_sites(*, url: str) -> list[SiteRow]:
    """Every site with a state in the database at ``url`` (serial, hosts, last writer, lock holder)."""
    from sovkit.state.postgres import list_sites  # psycopg only when a database is used

    return list_sites(url)


def state_history(*, workspace: Workspace) -> list[HistoryEntry]:
    """Every serial of the workspace's state, oldest first (who, host, when, operation, run)."""
    return workspace.store.history()


def state_move(*, workspace: Workspace, direction: Literal["pull", "push"], state_url: str | None = None,
               force: bool = False) -> Moved:
    """``pull``: the database's state into the local state directory; ``push``: the local state into the
    database. The URL is ``state_url``, else ``$SOVKIT_STATE_URL``, else the inventory's ``state:``."""
    url = state_url_for(workspace.inventory, state_url)
    if url is None:
        raise StateError(f"no state database to {direction} {'from' if direction == 'pull' else 'to'}",
                         "pass --state-url postgresql://USER@HOST/DB (or set $SOVKIT_STATE_URL, or `state:` in the "
                         "inventory)")
    from sovkit.state.postgres import PostgresStateStore

    remote = PostgresStateStore(url, workspace.inventory.site.metadata.name, workspace.lock_timeout)
    local = LocalStateStore(workspace.directory, workspace.lock_timeout)
    try:
        if direction == "pull":
            return move_state(remote, local, "pull", force)
        return move_state(local, remote, "push", force)
    finally:
        remote.close()


# --- attestations / audit ---------------------------------------------------------------------------------------


@dataclass
class AttestationTarget:
    """Where to verify: the log, and (when known) the state and artifact store to check subjects against."""

    log_dir: Path
    state: Any
    artifact_root: Path | None


def attestation_target(*, path: Path, state_dir: Path | None = None) -> AttestationTarget:
    """``path`` is a log directory, a state directory holding ``attestations/``, or an inventory."""
    if (path / attest_log.LOG_FILE).exists() or (path / attest_log.HEAD_FILE).exists():
        state_file = path.parent / "state.json"
        state = LocalStateStore(path.parent).read() if state_file.exists() else None
        return AttestationTarget(path, state, None)
    if path.is_dir() and (path / attest_log.LOG_DIRNAME).is_dir():
        store = LocalStateStore(path)
        return AttestationTarget(path / attest_log.LOG_DIRNAME, store.read() if store.path.exists() else None, None)
    # files are not checked here: a changed store file must reach the subjects step, not stop the load
    ws = Workspace.open(path, state_dir, check_files=False)
    state = ws.store.read() if ws.state_file.exists() or ws.store.location != str(ws.state_file) else None
    return AttestationTarget(ws.attestations, state if state is None or state.serial else None,
                             ws.inventory.artifact_root)


def verify_attestations(*, target: AttestationTarget, keys: list[PublicKey],
                        keyring: Keyring | None = None) -> LogVerification:
    """The log's own steps, then subjects against the recorded state (and store files, when known).

    With a (verified) ``keyring`` every entry is judged by the key valid at its signing time."""
    result = attest_log.verify_log(target.log_dir, keys, keyring)
    if result.entries or result.ok:
        result.steps.append(check_subjects(result.entries, target.state, target.artifact_root))
    return result


def read_attestations(*, target: AttestationTarget) -> list[LogEntry]:
    """The log's entries, parsed but not verified (use :func:`verify_attestations` for that)."""
    return read_log(target.log_dir)


def build_audit_pack(*, workspace: Workspace, out: Path) -> AuditPack:
    """Write the regulator audit pack (signed with the workspace signer) and return what was written."""
    from sovkit.audit.pack import build_audit_pack as build  # CycloneDX loads only when auditing

    if workspace.signer is None:
        raise SovkitError("the audit pack must be signed", "pass the operator key (--key)")
    return build(workspace, out, workspace.signer, workspace.extra_policies)


def verify_audit_pack(*, pack: Path, keys: list[PublicKey], keyring: Keyring | None = None) -> Verification:
    """Check an audit pack offline: manifest signature, every file, ML-BOMs, the attestation log."""
    from sovkit.audit.verify import verify_audit_pack as verify

    return verify(pack, keys, keyring)


# --- keys ---------------------------------------------------------------------------------------------------------


def load_public_key(*, path: Path) -> PublicKey:
    """A public key file (PEM)."""
    return PublicKey.load(path)


def load_signer_file(*, path: Path, passphrase: bytes | None = None) -> LocalSigner:
    """A private key file as a signer (``passphrase`` for an encrypted one)."""
    return LocalSigner.load(path, passphrase)


# --- rotate: keyring, key rotation and revocation ----------------------------------------------------------------


def default_keyring_path(*, log_dir: Path) -> Path:
    """Where `sovkit keys rotate|revoke` keep the keyring by default: <state dir>/keys/keyring.json."""
    return _keyring.keyring_path_for(log_dir)


def load_keyring(*, path: Path, keys: list[PublicKey]) -> Keyring:
    """Read and verify a keyring; at least one version must be signed by one of ``keys``."""
    return _keyring.load_keyring(path, keys)


@dataclass(frozen=True)
class KeyChange:
    """What `sovkit keys rotate|revoke` wrote: the keyring version and the log entry recording it."""

    keyring: str
    version: int
    signed_by: str
    keyid: str  # the new key (rotate) or the revoked key (revoke)
    at: str
    log_entry: int


def _time_arg(value: str, what: str) -> str:
    try:
        _keyring.parse_time(value)
    except ValueError as exc:
        raise SovkitError(f"{what}: {exc}", "give an ISO 8601 time with a zone, e.g. 2025-06-01T12:00:00Z") from exc
    return value


def _record_change(log_dir: Path, ring_path: Path, ring: Keyring, signer: Signer, predicate_type: str,
                   predicate: dict[str, Any], at: str, successor: str | None = None) -> int:
    """Write the new keyring version, then append the statement naming it (signed by ``signer`` at ``at``)."""
    digest = ring.digests[-1]
    statement = Statement(subject=[Subject(name=f"keyring:{ring.version}", digest={"sha256": digest[7:]})],
                          predicateType=predicate_type,
                          predicate={**predicate, "keyring_version": ring.version, "keyring_digest": digest,
                                     "time": at})
    _keyring.write_keyring(ring_path, ring.envelopes)
    return attest_log.append(log_dir, [statement], signer, at=at, successor=successor)[0].index


def _existing_keyring(path: Path) -> Keyring | None:
    """The operator's own keyring (its chain checked; it is the operator's file, so no pinned key)."""
    return _keyring.load_keyring(path, None) if path.exists() else None


def rotate_key(*, log_dir: Path, keyring_path: Path, old: Signer, new: PublicKey) -> KeyChange:
    """Hand over from ``old`` to ``new`` now: a keyring version signed by ``old`` (its window ends, the new one's
    starts) and a rotation statement in the log signed by ``old``; the anchor then lets only ``new`` append."""
    attest_log.check_appendable(log_dir, old)
    at = now()
    ring = _keyring.rotate(_existing_keyring(keyring_path), old, new, at)
    index = _record_change(log_dir, keyring_path, ring, old, attest_log.KEY_ROTATION_PREDICATE,
                           {"retired": old.keyid, "successor": new.keyid}, at, successor=new.keyid)
    return KeyChange(str(keyring_path), ring.version, old.keyid, new.keyid, at, index)


def revoke_key(*, log_dir: Path, keyring_path: Path, signer: Signer, key: str, reason: str,
               revoked_at: str | None = None) -> KeyChange:
    """Revoke ``key`` (a key id, or a public key file) from ``revoked_at`` (default now): a keyring version and a
    revocation statement in the log, both signed by ``signer`` (a current key)."""
    keyid = PublicKey.load(Path(key)).keyid if Path(key).is_file() else key
    if len(keyid) != 64 or any(c not in "0123456789abcdef" for c in keyid):
        raise SovkitError(f"{key!r} is neither a key id (64 hex digits) nor a public key file",
                          "pass the key id `sovkit keys id KEY.pub` prints, or the .pub file")
    if not reason.strip():
        raise SovkitError("a revocation needs a reason", "say why, e.g. --reason 'key compromised'")
    attest_log.check_appendable(log_dir, signer)
    at = now()
    when = _time_arg(revoked_at, "--at") if revoked_at else at
    ring = _existing_keyring(keyring_path) or _keyring.start(signer, at)
    ring = _keyring.revoke(ring, signer, keyid, when, reason, at)
    index = _record_change(log_dir, keyring_path, ring, signer, attest_log.KEY_REVOCATION_PREDICATE,
                           {"keyid": keyid, "revoked_at": when, "reason": reason}, at)
    return KeyChange(str(keyring_path), ring.version, signer.keyid, keyid, at, index)
# --- hsm: key references (a key file or a PKCS#11 URI) ---------------------------------------------------------

KEY_URI_SCHEME = "pkcs11:"
PinPrompt = Callable[[str], str | None]


def is_key_uri(*, ref: str | os.PathLike[str]) -> bool:
    """``ref`` names a key in a PKCS#11 token (``pkcs11:token=…;object=…``) rather than a key file."""
    return str(ref).startswith(KEY_URI_SCHEME)


def load_signer_ref(*, ref: str | Path, passphrase: bytes | None = None,
                    pin_prompt: PinPrompt | None = None) -> Signer:
    """The signer a key reference names: a PKCS#11 URI (the PIN from ``pin-source=``, ``$SOVKIT_PKCS11_PIN``
    or ``pin_prompt``) or a private key file (``passphrase`` for an encrypted one)."""
    if is_key_uri(ref=ref):
        from sovkit.signing.pkcs11 import open_signer  # the PKCS#11 binding loads only for token keys

        return open_signer(str(ref), pin_prompt)
    return LocalSigner.load(Path(ref), passphrase)


def generate_token_key(*, uri: str, algorithm: Algorithm, public_path: Path | None = None,
                       pin_prompt: PinPrompt | None = None) -> GeneratedTokenKey:
    """Generate a key pair inside the token ``uri`` names (private key sensitive, not extractable) and write
    its public key PEM to ``public_path`` (default ``<object>.pub``; never overwritten)."""
    from sovkit.signing.pkcs11 import generate

    return generate(uri, algorithm, public_path, pin_prompt)


# --- serving planner ------------------------------------------------------------------------------------------------


def plan_serving(*, inventory: LoadedInventory, model: str, ttft_ms: float, tpot_ms: float, rate: float,
                 isl: int | None = None, osl: int | None = None, lengths: Path | None = None, percentile: int = 90,
                 prices: list[str] | None = None, link: str = "rdma", link_gbs: float | None = None,
                 name: str | None = None, write: Path | None = None,
                 calibration: Path | None = None, mode: str = "auto") -> ServingPlanOutput:
    """Plan prefill/decode pools (or co-located instances) for ``model`` on the site's free accelerators.

    ``lengths`` is a CSV request-length histogram (isl,osl,weight) used instead of ``isl``/``osl``; ``prices``
    are ``KIND=USD_PER_HOUR`` strings (then the objective is cost); ``write`` is a site file the placement is
    inserted into (the result carries the unified diff); ``calibration`` is a site calibration file used before
    the catalog's calibrations.
    """
    if lengths is not None:
        bins = read_histogram(lengths)
    elif isl is not None and osl is not None:
        bins = (LengthBin(isl, osl),)
    else:
        raise PlannerError("give the request lengths: --isl N and --osl N, or --lengths CSV",
                           "e.g. --isl 1024 --osl 256")
    if name is not None and not (identifiers.matches(identifiers.NAME, name) and len(name) <= 55):
        raise PlannerError(f"--name {identifiers.describe(name)} is not a usable name stem",
                           "lowercase letters, digits, '.', '_' and '-', at most 55 characters (it gets "
                           "'-prefill' / '-decode' appended)")
    if mode not in ("auto", "disaggregated", "colocated"):
        raise PlannerError(f"--mode {mode!r} is not one of auto, disaggregated, colocated",
                           "auto lets the planner choose; the others restrict the search")
    if link not in LINK_GBS:
        raise PlannerError(f"--link {link!r} is not one of {', '.join(LINK_GBS)}", "the kv_transfer link kinds")
    request = PlanRequest(model=model, ttft_ms=ttft_ms, tpot_ms=tpot_ms, rate=rate, bins=bins,
                          percentile=percentile, prices=parse_prices(prices or []), link=cast(LinkKind, link),
                          link_gbs=link_gbs, name=name,
                          mode=cast(Literal["auto", "disaggregated", "colocated"], mode))
    predictor = RooflinePredictor(load_calibrations(calibration))
    return plan_and_place(inventory, load_catalog(), request, predictor=predictor, write=write)


# --- fleet: sites driven through their gateways ------------------------------------------------------------------


def load_fleet(*, path: Path) -> LoadedFleet:
    """Read and validate a fleet file (FleetError naming file:line and the field)."""
    return _load_fleet(path)


def run_fleet(*, fleet: LoadedFleet, verb: Verb, rollout: Rollout, workdir: Path, parallel: int | None = None,
              sites: list[str] | None = None, on_result: Callable[[SiteResult], None] = lambda r: None
              ) -> list[SiteResult]:
    """Run ``verb`` at every site through its gateway (parallel, failures isolated), each answer verified."""
    return _run_fleet(fleet, verb, rollout, workdir, parallel, sites, on_result=on_result)


def fleet_agent(*, verb: Verb, inventory: Path, site: str, nonce: str, rollout: Rollout, state_dir: Path | None,
                signer_for: Callable[[Workspace], Signer]) -> str:
    """At a site's gateway: run ``verb`` there and return the summary signed with the site's key (one JSON line).

    ``signer_for`` loads the site's key for the opened workspace. A verb that fails is summarised (``ok``
    false, with the error); a site whose inventory cannot be opened raises, as nothing can be run or signed.
    """
    try:
        ws: Workspace | None = Workspace.open(inventory, state_dir)
        error = None
    except SovkitError as exc:
        ws, error = None, exc
    if ws is not None:
        ws.signer = signer_for(ws)
        summary = site_summary(ws, site, verb, nonce, rollout)
        return sign_summary(summary, ws.signer)
    raise error or SovkitError("the site could not be opened")
# --- monitor: continuous compliance (`sovkit monitor`) -------------------------------------------------------------


def parse_interval(*, text: str) -> float:
    """A check interval (``30s``, ``15m``, ``1h``, ``1d``) in seconds; anything else is a MonitorError."""
    return _parse_interval(text)


def open_monitor(*, workspace: Workspace, keys: list[PublicKey] | None = None,
                 serving_timeout: float = 5.0) -> Monitor:
    """A monitor of the workspace's site; its statements are signed with the workspace signer and the log is
    verified with ``keys`` (default: the signer's own public key)."""
    if workspace.signer is None:
        raise MonitorError("the monitor's compliance statements must be signed", "pass the operator key (--key)")
    return Monitor(workspace, signer=workspace.signer, keys=keys or [workspace.signer.public_key],
                   serving_timeout=serving_timeout)


def monitor_metrics(*, monitor: Monitor) -> MonitorMetrics:
    """The monitor's Prometheus metrics, in a registry of their own."""
    return MonitorMetrics(monitor.site)


def serve_monitor_metrics(*, metrics: MonitorMetrics, address: str, port: int) -> MetricsServer:
    """Serve the metrics at http://address:port/metrics until ``close()``."""
    return _serve_metrics(metrics, address, port)


def run_monitor(*, monitor: Monitor, interval: float, stop: threading.Event, count: int | None = None,
                metrics: MonitorMetrics | None = None, metrics_file: Path | None = None,
                on_check: Callable[[CheckReport], None] | None = None) -> list[CheckReport]:
    """Check every ``interval`` seconds until ``stop`` is set (or ``count`` checks ran); each check is attested,
    published to ``metrics`` (and ``metrics_file``, node_exporter's textfile format) and passed to ``on_check``."""
    return run_checks(monitor, interval=interval, stop=stop, count=count, metrics=metrics,
                      metrics_file=str(metrics_file) if metrics_file is not None else None,
                      on_check=on_check or (lambda r: None))
