"""The chosen plan as inventory objects (deployments and a serving group), printed or written into a site file.

Writing edits the YAML as text — the new items are appended to the file's ``deployments:`` and
``serving_groups:`` lists (or the lists are added) — so comments, order and formatting of everything else stay
as the user wrote them (a PyYAML round trip would drop comments). The edited file is checked before it is
written: it parses to exactly the old data plus the new items, the whole site validates and its placements
have no device or port conflict. The write is one atomic replace; a site that then fails to load is put back.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sovkit.catalog import Catalog
from sovkit.errors import InventoryError, PlannerError
from sovkit.fsutil import atomic_write
from sovkit.inventory import LoadedInventory, load_inventory
from sovkit.inventory.models import Deployment, ServingGroup, Site
from sovkit.inventory.serving import placements
from sovkit.planner.perf import Predictor
from sovkit.planner.search import PlanRequest, ServingPlan, plan_inventory

FIRST_PORT = 8000


@dataclass(frozen=True)
class Placement:
    deployments: list[dict[str, Any]]
    serving_groups: list[dict[str, Any]]

    def to_yaml(self) -> str:
        doc: dict[str, Any] = {"deployments": self.deployments}
        if self.serving_groups:
            doc["serving_groups"] = self.serving_groups
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)


def _unique(stem: str, taken: set[str], suffixes: tuple[str, ...]) -> str:
    n = 1
    while True:
        base = stem if n == 1 else f"{stem}-{n}"
        if all(f"{base}{s}" not in taken for s in suffixes):
            return base
        n += 1


def _free_ports(site: Site, catalog: Catalog, count: int) -> list[int]:
    """``count`` ports no socket of the site uses on any address (so no clash, whichever hosts share one)."""
    used = {u.port for u in placements(site, catalog).ports()}
    used |= {g.kv_transfer.port for g in site.serving_groups}
    out: list[int] = []
    port = FIRST_PORT
    while len(out) < count:
        if port not in used:
            out.append(port)
        port += 1
    return out


def build_placement(site: Site, catalog: Catalog, plan: ServingPlan, name: str | None = None) -> Placement:
    """The plan as deployments (and a serving group when disaggregated) that `sovkit plan` installs as is."""
    model = next(m for m in site.models if m.name == plan.model)
    kv = "int8" if model.dtype == "int4" else model.dtype
    taken = {d.name for d in site.deployments} | {g.name for g in site.serving_groups}
    deployments: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []

    def deployment(pool_role: str, dname: str, port: int, targets: dict[str, float | int]) -> dict[str, Any]:
        pool = next(p for p in plan.pools if p.role == pool_role)
        d: dict[str, Any] = {
            "name": dname, "model": plan.model, "runtime": pool.runtime, "hosts": pool.hosts, "role": pool_role,
            "tensor_parallel": pool.tensor_parallel, "port": port, "devices": pool.devices,
            "max_model_len": plan.max_model_len, "max_batch": pool.max_batch, "kv_dtype": kv, "targets": targets,
        }
        Deployment.model_validate(d)  # a bug here must not reach a user's file
        return d

    stem = name or plan.model
    if plan.mode == "colocated":
        base = _unique(stem, taken, ("",))
        (port,) = _free_ports(site, catalog, 1)
        deployments.append(deployment("both", base, port, {"ttft_ms": plan.targets_ttft_ms,
                                                           "tpot_ms": plan.targets_tpot_ms, "isl": plan.isl}))
        return Placement(deployments, groups)
    base = _unique(stem, taken, ("", "-prefill", "-decode"))
    p_port, d_port, kv_port, r_port = _free_ports(site, catalog, 4)
    deployments.append(deployment("prefill", f"{base}-prefill", p_port, {"ttft_ms": plan.targets_ttft_ms,
                                                                             "isl": plan.isl}))
    deployments.append(deployment("decode", f"{base}-decode", d_port, {"tpot_ms": plan.targets_tpot_ms,
                                                                       "isl": plan.isl}))
    prefill = next(p for p in plan.pools if p.role == "prefill")
    group = {"name": base, "prefill": f"{base}-prefill", "decode": f"{base}-decode",
             "kv_transfer": {"connector": plan.connector, "link": plan.link, "port": kv_port},
             "router": {"host": prefill.hosts[0], "port": r_port}}
    ServingGroup.model_validate(group)
    groups.append(group)
    return Placement(deployments, groups)


# ----- writing into a site file ----------------------------------------------------------------------

_KEY = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*:(?P<rest>.*)$")


def _items_text(items: list[dict[str, Any]], indent: int) -> str:
    body = yaml.safe_dump(items, sort_keys=False, default_flow_style=None, width=120)
    pad = " " * indent
    return "".join(pad + line if line.strip() else line for line in body.splitlines(keepends=True))


def insert_items(text: str, section: str, items: list[dict[str, Any]]) -> str:
    """``text`` with ``items`` appended to its top-level block list ``section`` (added at the end if absent)."""
    if not items:
        return text
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    at = None
    for i, line in enumerate(lines):
        m = _KEY.match(line)
        if m and m.group("key") == section:
            at = i
            break
    if at is None:
        sep = "" if not lines or lines[-1].strip() == "" else "\n"
        return "".join(lines) + f"{sep}{section}:\n" + _items_text(items, 2)
    rest = _KEY.match(lines[at]).group("rest")  # type: ignore[union-attr]
    value = rest.split(" #", 1)[0].strip()
    if value == "[]":
        comment = rest[rest.index(" #"):].rstrip("\n") if " #" in rest else ""
        lines[at] = f"{section}:{comment}\n" + _items_text(items, 2)
        return "".join(lines)
    if value and not value.startswith("#"):
        raise PlannerError(f"the {section} list is written in flow style ({value[:40]!r}); cannot append to it "
                           "as text", f"write {section} as a block list (`- name: ...` items), or paste the YAML")
    last, indent = at, None
    for j in range(at + 1, len(lines)):
        line = lines[j]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line[0].isspace() and not line.startswith("-"):
            break
        if indent is None:
            indent = len(line) - len(line.lstrip(" "))
        last = j
    lines.insert(last + 1, _items_text(items, indent if indent is not None else 2))
    return "".join(lines)


@dataclass(frozen=True)
class Written:
    file: Path
    diff: str


def write_placement(inv: LoadedInventory, catalog: Catalog, placement: Placement, site_file: Path) -> Written:
    """Insert the placement into ``site_file`` (one of the inventory's files), checked, atomically."""
    target = site_file.resolve()
    if target not in {f.resolve() for f in inv.files}:
        raise PlannerError(f"{site_file} is not a file of this inventory",
                           "pass one of: " + ", ".join(str(f) for f in inv.files))
    old = target.read_text(encoding="utf-8")
    new = insert_items(old, "deployments", placement.deployments)
    new = insert_items(new, "serving_groups", placement.serving_groups)
    before, after = yaml.safe_load(old) or {}, yaml.safe_load(new)
    expect = dict(before)
    expect["deployments"] = list(before.get("deployments") or []) + placement.deployments
    if placement.serving_groups:
        expect["serving_groups"] = list(before.get("serving_groups") or []) + placement.serving_groups
    if after != expect:
        raise PlannerError(f"inserting the plan into {site_file} as text would change more than the two lists",
                           "paste the printed YAML into the file by hand")
    data = inv.site.model_dump(mode="json", by_alias=True, exclude_unset=True)
    data["deployments"] = list(data.get("deployments", [])) + placement.deployments
    data["serving_groups"] = list(data.get("serving_groups", [])) + placement.serving_groups
    try:
        site = Site.model_validate(data)
    except ValidationError as exc:
        raise PlannerError(f"the planned deployments do not validate: {exc.errors()[0]['msg']}",
                           "this is a planner bug; report it with the inventory") from None
    conflicts = placements(site, catalog).conflicts
    if conflicts:
        raise PlannerError(f"the planned deployments conflict: {conflicts[0].message}",
                           "this is a planner bug; report it with the inventory")
    atomic_write(target, new.encode("utf-8"), target.stat().st_mode & 0o777)
    try:
        load_inventory(inv.root if len(inv.files) > 1 else target)
    except InventoryError as exc:
        atomic_write(target, old.encode("utf-8"), target.stat().st_mode & 0o777)
        raise PlannerError(f"the written inventory did not load ({exc.message}); {site_file} was put back",
                           "paste the printed YAML into the file by hand") from exc
    diff = "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=f"{site_file} (before)", tofile=f"{site_file} (planned)"))
    return Written(site_file, diff)


class ServingPlanOutput(BaseModel):
    """`sovkit serving plan --json`: the plan, its placement as YAML, and what was written (with the diff)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    plan: ServingPlan
    placement_yaml: str
    written: str | None = None
    diff: str | None = None


def parse_prices(values: list[str]) -> dict[str, float]:
    """``KIND=USD_PER_HOUR`` pairs (per device-hour); PlannerError names a malformed one."""
    out: dict[str, float] = {}
    for v in values:
        kind, sep, usd = v.partition("=")
        try:
            price = float(usd)
        except ValueError:
            price = math.nan
        if not sep or not kind or not math.isfinite(price) or price < 0:
            raise PlannerError(f"--price {v!r} is not KIND=USD_PER_HOUR", "e.g. --price nvidia-h100-sxm=2.50")
        out[kind] = price
    return out


def plan_and_place(inv: LoadedInventory, catalog: Catalog, request: PlanRequest, predictor: Predictor | None = None,
                   write: Path | None = None) -> ServingPlanOutput:
    """Search, turn the winner into deployments (+ serving group), and optionally write it into ``write``."""
    unknown = sorted(set(request.prices) - set(catalog.accelerators))
    if unknown:
        raise PlannerError(f"--price names unknown accelerator kind(s) {', '.join(unknown)}",
                           catalog.suggest("accelerators", unknown[0]))
    plan = plan_inventory(inv, catalog, request, predictor)
    placement = build_placement(inv.site, catalog, plan, request.name)
    if write is None:
        return ServingPlanOutput(plan=plan, placement_yaml=placement.to_yaml())
    written = write_placement(inv, catalog, placement, write)
    return ServingPlanOutput(plan=plan, placement_yaml=placement.to_yaml(), written=str(written.file),
                             diff=written.diff)
