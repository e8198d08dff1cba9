"""sovkit's library facade: the one module the CLI (and any other front end) calls.

Every function takes keyword-only arguments and returns data; none prints or exits. Operations on a
site take a :class:`~sovkit.workspace.Workspace` (open one with :func:`open_workspace`), which carries
the adapters (state store, executor, policy engine, signer). Results with a ``--json`` form have an
``output()`` method returning a pydantic model; the CLI dumps that model as it is.

Besides functions and result types, ``__all__`` re-exports the few values the CLI needs:
``PASSPHRASE_ENV`` (the environment variable holding a key passphrase), ``ALGORITHMS`` and
``Algorithm`` (the signing-key algorithms, as a list and as a type), ``STEP_TITLES`` (names of
the attestation-verification steps) and ``bundles`` (the air-gap bundle entry points, ``sovkit.bundle.api``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from sovkit import identifiers, workflow
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
from sovkit.errors import PlannerError, SovkitError, StateError
from sovkit.inventory import LoadedInventory, load_inventory
from sovkit.inventory.ansible import to_ansible_inventory
from sovkit.inventory.capacity import RackPower, host_power, rack_power
from sovkit.inventory.models import Site
from sovkit.plan.model import Change, Plan
from sovkit.plan.planfile import Bindings, SavedPlan, looks_like_plan, make_saved_plan, read_plan, write_plan
from sovkit.planner import service as _planner
from sovkit.planner.calibration import CalibrationFile, load_calibrations
from sovkit.planner.forecast import RequestForecast, SitePredictor, request_forecast, site_predictor
from sovkit.planner.perf import RooflinePredictor, Workload
from sovkit.planner.placement import ServingPlanOutput, parse_prices, plan_and_place
from sovkit.planner.search import LINK_GBS, LengthBin, LinkKind, PlanRequest, read_histogram
from sovkit.planner.service import PredictOutput
from sovkit.policy.api import PolicyBundleFile, PolicyDecision, evaluate_policy, export_policy_bundle
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
from sovkit.signing.steps import Verification
from sovkit.state.models import HistoryEntry, LockInfo
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
    "LoadedInventory",
    "LocalSigner",
    "LockInfo",
    "LogEntry",
    "LogVerification",
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
    "SavedPlan",
    "ServingPlanOutput",
    "Signer",
    "StateStore",
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
    "demo_commands",
    "discover_site",
    "export_ansible",
    "export_policy_bundle",
    "force_unlock",
    "generate_key",
    "host_power",
    "input_schema",
    "inventory_schema",
    "key_info",
    "load_catalog",
    "load_public_key",
    "load_public_keys",
    "load_saved_plan",
    "load_signer_file",
    "looks_like_plan",
    "make_plan",
    "opa_engine",
    "open_workspace",
    "parse_size",
    "plan_serving",
    "policy_input",
    "prepare_demo",
    "read_attestations",
    "record_policy_decision",
    "refresh",
    "rollback",
    "run_policy_tests",
    "save_plan",
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
                   signer: Signer | None = None, extra_policies: Path | None = None, state_url: str | None = None,
                   lock_timeout: float = 0.0) -> Workspace:
    """Load the inventory and wire the adapters (the real ones for any not passed); ``state_url`` keeps the
    state in PostgreSQL (docs/state.md), ``lock_timeout`` waits that many seconds for a held state lock."""
    return Workspace.open(inventory, state_dir, executor=executor, state_store=state_store,
                          policy_engine=policy_engine, signer=signer, extra_policies=extra_policies,
                          state_url=state_url, lock_timeout=lock_timeout)


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


def make_plan(*, workspace: Workspace, refresh: bool = False, on_event: OnEvent = _quiet) -> PlanResult:
    """Desired (inventory) vs recorded (or, with ``refresh``, observed) state, with the policy decision."""
    return workflow.make_plan(workspace, refresh, on_event)


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
                    on_plan_event: OnEvent = _quiet, on_event: OnEvent = _quiet) -> ApplyOutcome:
    """Plan, let ``confirm`` show the plan and answer, then apply (``confirmed`` is False when it said no)."""
    return workflow.apply_inventory(workspace, confirm, refresh, on_plan_event, on_event)


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


def verify_attestations(*, target: AttestationTarget, keys: list[PublicKey]) -> LogVerification:
    """The log's own steps, then subjects against the recorded state (and store files, when known)."""
    result = attest_log.verify_log(target.log_dir, keys)
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


def verify_audit_pack(*, pack: Path, keys: list[PublicKey]) -> Verification:
    """Check an audit pack offline: manifest signature, every file, ML-BOMs, the attestation log."""
    from sovkit.audit.verify import verify_audit_pack as verify

    return verify(pack, keys)


# --- keys ---------------------------------------------------------------------------------------------------------


def load_public_key(*, path: Path) -> PublicKey:
    """A public key file (PEM)."""
    return PublicKey.load(path)


def load_signer_file(*, path: Path, passphrase: bytes | None = None) -> LocalSigner:
    """A private key file as a signer (``passphrase`` for an encrypted one)."""
    return LocalSigner.load(path, passphrase)


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
