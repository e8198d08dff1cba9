"""The inventory's ``drivers:`` section and ``driver:`` on accelerator slots: located errors for bad references,
wrong vendors, two drivers of one module, malformed entries; the plan orders the driver before firmware."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sovkit.components import registry
from sovkit.components.host import desired_site
from sovkit.errors import InventoryError, Problem
from sovkit.inventory.loader import load_inventory
from tests.driverkit import add_driver, use_driver
from tests.sitefactory import Site, make_site


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = make_site(tmp_path)
    add_driver(s, tmp_path / "debs", "rbln-driver-1-1", "1.1")
    use_driver(s, "rbln-driver-1-1")
    s.save()
    return s


def _problems(site: Site) -> list[Problem]:
    site.save()
    with pytest.raises(InventoryError) as err:
        load_inventory(site.path)
    return err.value.problems


def _line_of(site: Site, needle: str, nth: int = 1) -> int:
    lines = [i for i, line in enumerate(site.path.read_text().splitlines(), 1) if needle in line]
    return lines[nth - 1]


def test_a_valid_driver_entry_loads_and_orders_before_firmware(site: Site) -> None:
    inv = load_inventory(site.path)
    assert [d.name for d in inv.site.drivers] == ["rbln-driver-1-1"]
    assert [k.name for k in registry.kinds()][:2] == ["driver", "firmware"]
    want = desired_site(inv)["npu-node-1"].drivers["rebellions"]
    assert (want.name, want.version, want.format, want.vendor) == ("rbln-driver-1-1", "1.1", "deb", "rebellions")


def test_unknown_driver_on_a_slot_is_located_with_a_suggestion(site: Site) -> None:
    site.host("npu-node-2")["accelerators"][0]["driver"] = "rbln-driver-1-2"
    [p] = _problems(site)
    assert (p.path, p.message, p.hint) == ("hosts[1].accelerators[0].driver", "unknown driver 'rbln-driver-1-2'",
                                           "did you mean 'rbln-driver-1-1'?")
    assert p.file is not None and p.file.endswith("site.yaml")
    assert p.line == _line_of(site, "driver: rbln-driver-1-2")


def test_driver_of_another_vendor_and_untrusted_vendor(site: Site, tmp_path: Path) -> None:
    site.data["trust_roots"]["vendors"].append({"name": "furiosa", "public_key": "keys/vendor-rebellions.pub"})
    add_driver(site, tmp_path / "debs2", "rngd-driver", "2025.3.0", module="rngd", package="furiosa-driver-rngd")
    site.data["drivers"][-1]["vendor"] = "furiosa"
    site.host("npu-node-1")["accelerators"][0]["driver"] = "rngd-driver"
    site.data["drivers"][0]["vendor"] = "rebelions"
    probs = {p.path: p for p in _problems(site)}
    assert probs["hosts[0].accelerators[0].driver"].message == (
        "driver 'rngd-driver' is from vendor furiosa, rebellions-atom-max is a rebellions card")
    assert probs["drivers[0].vendor"].message == "unknown trusted vendor 'rebelions'"
    assert probs["drivers[0].vendor"].line == _line_of(site, "vendor: rebelions")


def test_two_drivers_for_one_module_on_a_host(site: Site, tmp_path: Path) -> None:
    add_driver(site, tmp_path / "debs2", "rbln-driver-1-2", "1.2")
    host = site.host("npu-node-1")
    host["accelerators"].append({"kind": "rebellions-atom", "count": 1, "driver": "rbln-driver-1-2"})
    probs = [p for p in _problems(site) if p.path == "hosts[0].accelerators[1].driver"]
    assert [p.message for p in probs] == ["driver 'rbln-driver-1-2' loads module 'rebellions', which driver "
                                          "'rbln-driver-1-1' of another slot of this host loads too"]


@pytest.mark.parametrize(("edit", "path", "fragment"), [
    ({"module": "rebellions;reboot"}, "drivers[0].module", "names are 1-63 lowercase"),
    ({"version": "{{ lookup('pipe','id') }}"}, "drivers[0].version", "a version is"),
    ({"format": "tarball"}, "drivers[0].format", "'deb', 'rpm' or 'runfile'"),
    ({"firmware": "x"}, "drivers[0].firmware", "unknown field"),
    ({"format": "runfile", "artifacts": "twice"}, "drivers[0]", "exactly one artifact"),
    ({"artifacts": []}, "drivers[0].artifacts", "at least 1"),
])
def test_malformed_driver_entries_are_refused_at_their_line(site: Site, edit: dict[str, Any], path: str,
                                                           fragment: str) -> None:
    entry = site.data["drivers"][0]
    if edit.get("artifacts") == "twice":
        edit = {**edit, "artifacts": entry["artifacts"] * 2}
    entry.update(edit)
    probs = _problems(site)
    found = [p for p in probs if p.path == path]
    assert found, [(p.path, p.message) for p in probs]
    text = f"{found[0].message} {found[0].hint or ''}"
    assert fragment.lower() in text.lower(), text
    assert found[0].line is not None


def test_a_missing_package_in_the_store_is_located(site: Site) -> None:
    (site.store / site.data["drivers"][0]["artifacts"][0]["path"]).unlink()
    [p] = _problems(site)
    assert p.path == "drivers[0].artifacts[0].path" and "not found in the artifact store" in p.message
