"""What a component kind is: the ``ComponentKind`` base class and the small values kinds return.

Plan, provision, attest and audit only talk to kinds through this interface, so a new kind is one
module (plus its Ansible role and tests) registered in ``sovkit.components.registry``.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

from sovkit import identifiers as ids
from sovkit.catalog import Catalog, load_catalog
from sovkit.errors import ProvisionError
from sovkit.inventory.loader import LoadedInventory
from sovkit.inventory.models import Deployment, Host
from sovkit.signing.artifacts import Claim
from sovkit.state.models import HostRecord

if TYPE_CHECKING:
    from sovkit.components.host import DesiredHost

Action = Literal["create", "update", "delete"]


def _known_component(value: str) -> str:
    from sovkit.components import registry  # the registry imports this module: look it up at validation time

    if value != "host" and registry.find(value) is None:
        raise ValueError(f"unknown component {ids.describe(value)}")
    return value


Component = Annotated[str, AfterValidator(_known_component)]


class Change(BaseModel):
    """One planned change of one component on one host, with the reason shown to the operator."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str
    component: Component
    name: str
    action: Action
    reason: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreFile(_M):
    """An artifact: where it is in the store, its pinned digest and size, and its name on the host."""

    store_path: str
    sha256: str
    size: int
    name: str


class Row(BaseModel):
    """Base of audit rows (report.json refuses unknown fields, like every sovkit model)."""

    model_config = ConfigDict(extra="forbid")


class Provenance(Row):
    """Where a recorded component came from and whether it is still the approved one (audit rows)."""

    source: str
    signer: str | None = None
    signature: str | None = None
    matches_inventory: bool
    note: str = ""


def provenance(matches: bool, source: str, signer: str | None, signature: str | None, note: str = "") -> Provenance:
    return Provenance(source=source, signer=signer, signature=signature, matches_inventory=matches, note=note)


def recorded_artifacts(recorded: Mapping[str, Any]) -> dict[str, str]:
    """Every artifact (store path -> sha256) the recorded components of a kind were installed from: the
    attestation subjects of kinds whose records carry an ``artifacts`` map (drivers, runtimes)."""
    out: dict[str, str] = {}
    for rec in recorded.values():
        out.update(rec.artifacts)
    return out


@dataclass(frozen=True)
class Finding:
    """A value a host reported that sovkit refused (not a plain identifier, or a path outside its prefix)."""

    component: str
    name: str
    message: str


@dataclass(frozen=True)
class ArtifactCheck:
    """What preflight verifies before a component reaches a host: pinned digests, then the signature."""

    label: str
    files: dict[str, str]
    signature: str | None
    section: Literal["publishers", "vendors"]
    signer: str | None
    claim: Claim
    fmt: str = "dsse"


def host_prefix(root: str | None) -> str:
    return (root or "").rstrip("/")


@dataclass
class SiteIndex:
    """Lookups shared by every host of a site, built once (a 10,000-host plan must stay linear).

    Kinds keep their own lookups in ``kinds`` (built by ``ComponentKind.index``), so the index does not
    grow a branch per kind.
    """

    inv: LoadedInventory
    catalog: Catalog = field(default_factory=load_catalog)
    kinds: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def deployments(self) -> dict[str, list[Deployment]]:
        out: dict[str, list[Deployment]] = {}
        for dep in self.inv.site.deployments:
            for name in dict.fromkeys(dep.hosts):
                out.setdefault(name, []).append(dep)
        return out

    def of(self, kind: ComponentKind) -> Any:
        if kind.name not in self.kinds:
            self.kinds[kind.name] = kind.index(self)
        return self.kinds[kind.name]


@dataclass(frozen=True)
class HostContext:
    """One host as the kinds see it when building its desired records."""

    site: SiteIndex
    host: Host
    root: str

    @property
    def deployments(self) -> list[Deployment]:
        return self.site.deployments.get(self.host.name, [])

    @property
    def python(self) -> str:
        h = self.host
        return h.python_interpreter or (sys.executable if h.connection == "local" else "/usr/bin/python3")


def moved(recorded: str, wanted: str) -> str | None:
    """A reason when a component recorded at one path is wanted at another (the host's ``root`` changed).

    An empty recorded path (a state written before paths were recorded) is not a move.
    """
    if recorded and recorded.rstrip("/") != wanted.rstrip("/"):
        return f"install path changes {recorded} → {wanted} (the old copy is left in place)"
    return None


def removable(host: str, path: str, tail: str) -> str:
    """A recorded path sovkit may delete: a plain absolute path ending in sovkit's own install directory.

    Recorded paths came from the state file (or, before, from a host); removal is the one place they are
    acted on, so anything else is refused rather than deleted.
    """
    if not (ids.safe_path(path) and path.endswith(tail)):
        raise ProvisionError(f"{host}: recorded path {ids.describe(path)} is not a sovkit install directory "
                             f"(…{tail}); nothing was removed",
                             "run `sovkit refresh` to read the host back, or fix the state file")
    return path


def parent(path: str) -> str:
    return str(Path(path).parent)


class ComponentKind(ABC):
    """One kind of component. Subclasses set the class variables and implement the abstract methods.

    ``name`` is the component in plans and ``sovkit_record`` results; ``order`` places its changes on a host
    (lower first; the built-ins are driver 5, then 10, 20, 30, 40, so a kind can go between); ``field`` is its map in
    ``DesiredHost`` and ``HostRecord`` (a kind whose field is not an attribute there lives in their
    ``extra_kinds`` maps); ``var`` names its Ansible variables (``sovkit_<var>`` at apply,
    ``sovkit_observe.<var>`` at observe); ``record`` is its state record model.
    """

    name: ClassVar[str]
    order: ClassVar[int]
    field: ClassVar[str]
    var: ClassVar[str]
    record: ClassVar[type[BaseModel]]
    removable: ClassVar[bool] = True  # recorded but no longer desired -> a delete change

    # --- desired state (plan) ---
    def index(self, site: SiteIndex) -> Any:
        """Per-site lookups this kind needs for every host (built once per plan)."""
        return None

    @abstractmethod
    def desired(self, ctx: HostContext) -> dict[str, Any]:
        """This kind's desired records for one host, by name."""

    def artifacts(self, want: Any) -> dict[str, str]:
        """Store path -> pinned sha256 of everything one desired record installs (bound into saved plans)."""
        return {}

    # --- diff (plan) ---
    @abstractmethod
    def changes(self, host: str, name: str, want: Any, have: Any | None) -> Change | None:
        """The change taking ``have`` (None: not recorded) to ``want``, with its reason; None when equal."""

    def diff(self, host: str, desired: Mapping[str, Any], recorded: Mapping[str, Any]) -> tuple[list[Change], int]:
        """Changes for this kind on one host, and how many components are unchanged."""
        out: list[Change] = []
        same = 0
        for name, want in desired.items():
            change = self.changes(host, name, want, recorded.get(name))
            if change is None:
                same += 1
            else:
                out.append(change)
        if self.removable:
            out += [Change(host=host, component=self.name, name=name, action="delete",
                           reason="no longer deployed on this host") for name in sorted(set(recorded) - set(desired))]
        return out, same

    # --- state ---
    def desired_of(self, host: DesiredHost) -> dict[str, Any]:
        if self.field in type(host).model_fields:
            value: dict[str, Any] = getattr(host, self.field)
            return value
        return host.extra_kinds.get(self.name, {})

    def records_of(self, host: HostRecord, *, write: bool = False) -> dict[str, Any]:
        """The live map of this kind's records on a host (with ``write``, mutating it updates the host record)."""
        if self.field in HostRecord.model_fields:
            value: dict[str, Any] = getattr(host, self.field)
            return value
        if write:
            return host.extra_kinds.setdefault(self.name, {})
        return host.extra_kinds.get(self.name, {})

    @abstractmethod
    def from_record(self, name: str, result: dict[str, Any], current: Any | None,
                    signatures_ok: Mapping[str, bool]) -> BaseModel:
        """The state record for one ``sovkit_record`` result a host sent back (untrusted: the record model and
        the checks here refuse anything that is not plain; raise ValueError/KeyError/TypeError)."""

    # --- provision ---
    def apply_vars(self, want: Any, store: Path, root: str, have: Any | None = None) -> dict[str, Any] | None:
        """Ansible variables for installing one desired record (an item of ``sovkit_<var>``); ``have`` is what
        the state records for it (None: nothing)."""
        return None

    def removal(self, host: str, name: str, have: Any | None, root: str) -> list[str] | None:
        """Paths to remove for a delete change (checked with :func:`removable`); ``have`` is the recorded record
        (None if the state has none). None: nothing to remove."""
        return None

    def observe_vars(self, desired: Mapping[str, Any], recorded: Mapping[str, Any],
                     catalog: Catalog) -> list[dict[str, Any]]:
        """What the observe play reads back for this kind (``sovkit_observe.<var>``)."""
        return []

    def parse(self, spec: list[dict[str, Any]], observed: dict[str, Any], desired: Mapping[str, Any],
              recorded: Mapping[str, Any], findings: list[Finding]) -> dict[str, Any]:
        """The observe play's output for this kind turned into state records; every value is untrusted."""
        return {}

    def preflight(self, want: Any) -> ArtifactCheck | None:
        """The artifacts and signature preflight verifies before this record is installed."""
        return None

    # --- attest / audit ---
    def subjects(self, recorded: Mapping[str, Any], desired: Mapping[str, Any] | None) -> dict[str, str]:
        """Provenance subjects (name -> sha256) of what is recorded as installed."""
        return {}

    def audit_index(self, inv: LoadedInventory) -> Any:
        """Per-site lookups for audit rows (built once per report)."""
        return None

    def audit_rows(self, recorded: Mapping[str, Any], index: Any) -> Sequence[BaseModel]:
        """One audit row per recorded component, tied back to the inventory entry it came from."""
        return []
