"""The driver kind's pure parts: diff reasons, install commands per format, what observe reads back (untrusted),
the state format (no `drivers` key while empty), preflight, provenance subjects and audit rows."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from sovkit import identifiers as ids
from sovkit.catalog import load_catalog
from sovkit.components.base import Finding, StoreFile
from sovkit.components.driver import DesiredDriver, Driver, install_argv
from sovkit.inventory.loader import load_inventory
from sovkit.state.models import DriverRecord, HostRecord
from tests.driverkit import add_driver
from tests.sitefactory import make_site

KIND = Driver()
DEB = StoreFile(store_path="drivers/rebellions-sim_1.1_all.deb", sha256="a" * 64, size=10,
                name="rebellions-sim_1.1_all.deb")
WANT = DesiredDriver(name="rbln-driver-1-1", module="rebellions", version="1.1", vendor="rebellions", format="deb",
                     artifacts=(DEB,), signature="drivers/rbln-driver-1-1.sig")


def _rec(version: str, artifacts: dict[str, str] | None = None) -> DriverRecord:
    return DriverRecord(module="rebellions", version=version, driver="rbln-driver", format="deb",
                        artifacts={DEB.store_path: DEB.sha256} if artifacts is None else artifacts)


def test_changes_name_what_happens_to_the_module() -> None:
    def reason(have: DriverRecord | None) -> str | None:
        change = KIND.changes("h1", "rebellions", WANT, have)
        return None if change is None else f"{change.action}: {change.reason}"

    assert reason(None) == "create: install rbln-driver-1-1 (deb), load module rebellions 1.1"
    assert reason(_rec("1.1")) is None
    assert reason(_rec("1.0")) == "update: upgrade 1.0 → 1.1 (module rebellions reloaded)"
    assert reason(_rec("1.10")) == "update: DOWNGRADE 1.10 → 1.1 (module rebellions reloaded)"
    assert reason(_rec("1.1", {DEB.store_path: "b" * 64})) == \
        "update: installed package digests differ from the pinned ones"
    assert reason(_rec(ids.UNTRUSTED)) == \
        "update: the host reported an untrusted module version (refused); reinstall 1.1"
    assert KIND.removable is False and KIND.order < 10


def test_install_commands_per_format_and_root() -> None:
    assert install_argv("deb", "/srv/h1", ["/srv/h1/p.deb"]) == (["dpkg", "--root=/srv/h1", "-i", "/srv/h1/p.deb"],
                                                                 {})
    assert install_argv("deb", "", ["/p.deb", "/q.deb"]) == (["dpkg", "-i", "/p.deb", "/q.deb"], {})
    assert install_argv("rpm", "", ["/p.rpm"])[0] == ["rpm", "-U", "--replacepkgs", "--oldpackage", "/p.rpm"]
    assert install_argv("runfile", "/srv/h1", ["/srv/h1/r.run"]) == (["sh", "/srv/h1/r.run", "--silent"],
                                                                     {"DESTDIR": "/srv/h1"})
    v = KIND.apply_vars(WANT, Path("/store"), "/srv/h1")
    assert v["install"] == ["dpkg", "--root=/srv/h1", "-i",
                            "/srv/h1/var/lib/sovkit/staging/driver/rbln-driver-1-1-1.1/rebellions-sim_1.1_all.deb"]
    assert (v["sysfs"], v["dpkg_admin"], v["services"]) == ("/srv/h1/sys/module/rebellions", "/srv/h1/var/lib/dpkg",
                                                            ["rbln-smd.service"])


def test_observe_reads_sysfs_and_refuses_what_is_not_a_version() -> None:
    spec = KIND.observe_vars({"rebellions": WANT}, {"rngd": _rec("1.0").model_copy(update={"module": "rngd"})},
                             load_catalog())
    assert spec == [{"module": "rebellions"}, {"module": "rngd"}]

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    found: list[Finding] = []
    out = KIND.parse(spec, {"drivers": [b64("1.1\n"), None]}, {"rebellions": WANT}, {}, found)
    assert out == {"rebellions": DriverRecord(module="rebellions", version="1.1", driver="rbln-driver-1-1",
                                              format="deb", artifacts={DEB.store_path: DEB.sha256})}
    assert not found
    out = KIND.parse(spec, {"drivers": [b64("1.0\n"), b64("{{ lookup('pipe','id') }}")]}, {"rebellions": WANT},
                     {}, found)
    assert out["rebellions"].version == "1.0" and out["rebellions"].driver is None, "not what sovkit installed"
    assert out["rngd"].version == ids.UNTRUSTED
    assert [(f.component, f.name) for f in found] == [("driver", "rngd")]


def test_state_keeps_no_drivers_key_while_empty_and_round_trips() -> None:
    assert "drivers" not in json.loads(HostRecord().model_dump_json())
    rec = HostRecord(drivers={"rebellions": _rec("1.1")})
    again = HostRecord.model_validate_json(rec.model_dump_json())
    assert again.drivers["rebellions"] == _rec("1.1")


def test_preflight_subjects_and_audit_rows(tmp_path: Path) -> None:
    check = KIND.preflight(WANT)
    assert (check.label, check.section, check.signer, check.files) == (
        "driver:rbln-driver-1-1@1.1", "vendors", "rebellions", {DEB.store_path: DEB.sha256})
    assert (check.claim.kind, check.claim.name, check.claim.version) == ("driver", "rbln-driver-1-1", "1.1")
    assert KIND.subjects({"rebellions": _rec("1.1")}, None) == {DEB.store_path: DEB.sha256}

    site = make_site(tmp_path)
    entry = add_driver(site, tmp_path / "debs", "rbln-driver-1-1", "1.1")
    site.save()
    index = KIND.audit_index(load_inventory(site.path))
    pinned = {entry["artifacts"][0]["path"]: entry["artifacts"][0]["sha256"]}
    [ok] = KIND.audit_rows({"rebellions": _rec("1.1", pinned)}, index)
    assert ok.provenance.matches_inventory and ok.provenance.signer == "rebellions"
    [bad] = KIND.audit_rows({"rebellions": _rec("1.1", {DEB.store_path: "c" * 64})}, index)
    assert not bad.provenance.matches_inventory and "differ" in bad.provenance.note
    [unknown] = KIND.audit_rows({"rebellions": _rec("0.9")}, index)
    assert unknown.provenance.source == "module version not in the inventory"
