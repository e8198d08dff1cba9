"""sovkit/inventory/serving.py: devices per (host, deployment) without overlap, ports per address, conflicts."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from sovkit.catalog import load_catalog
from sovkit.inventory.models import Model, Site
from sovkit.inventory.serving import effective_kv_dtype, host_devices, kv_bytes_per_token, placements
from tests.conftest import INVENTORIES

DEMO: dict[str, Any] = yaml.safe_load((INVENTORIES / "demo" / "site.yaml").read_text())


def _site(edit: Any = None) -> Site:
    data = copy.deepcopy(DEMO)
    if edit is not None:
        edit(data)
    return Site.model_validate(data)


def _dep(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in data["deployments"] if d["name"] == name)


def _four_devices_on_node1(data: dict[str, Any]) -> None:
    """npu-node-1 gets a second slot (2 more ATOM-Max: indexes 2, 3); every deployment goes there, unpinned."""
    data["hosts"][0]["accelerators"].append({"kind": "rebellions-atom-max", "count": 2})
    for d in data["deployments"]:
        d["hosts"] = ["npu-node-1"]
        d["tensor_parallel"] = 1
        d.pop("devices", None)


def test_demo_site_places_one_device_per_node_and_four_ports() -> None:
    """The demo's planned placement: TP 1 on device 0 of each node."""
    p = placements(_site(), load_catalog())
    assert p.conflicts == ()
    pre, dec = p.get("chat-prefill", "npu-node-1"), p.get("chat-decode", "npu-node-2")
    assert (pre.devices, dec.devices) == ((0,), (0,))
    assert pre.device_kinds == ("rebellions-atom-max",) and pre.device_memory_gb == 64
    assert (pre.group, pre.side, dec.side) == ("chat", "prefill", "decode")
    assert sorted((u.port, u.purpose, u.host) for u in p.ports()) == [
        (8100, "router", "npu-node-1"), (8101, "serve", "npu-node-1"), (8102, "serve", "npu-node-2"),
        (8112, "kv", "npu-node-2")]
    with pytest.raises(KeyError):
        p.get("chat-prefill", "npu-node-2")


def test_explicit_devices_are_kept_and_others_fill_first_fit() -> None:
    """An explicit claim listed later still wins its indexes; allocated ones take the lowest free in order."""
    def edit(data: dict[str, Any]) -> None:
        _four_devices_on_node1(data)
        data["deployments"].append({**_dep(data, "chat-decode"), "name": "extra", "role": "both", "port": 8120,
                                    "devices": [0], "kv_dtype": "bf16"})
    p = placements(_site(edit), load_catalog())
    assert p.conflicts == ()
    assert p.get("extra", "npu-node-1").devices == (0,)
    assert p.get("chat-prefill", "npu-node-1").devices == (1,)
    assert p.get("chat-decode", "npu-node-1").devices == (2,)


def test_device_claimed_twice_and_out_of_range() -> None:
    def edit(data: dict[str, Any]) -> None:
        _dep(data, "chat-decode").update(hosts=["npu-node-1"], tensor_parallel=2, devices=[1, 5])
        _dep(data, "chat-prefill").update(tensor_parallel=2, devices=[0, 1])
    p = placements(_site(edit), load_catalog())
    got = {(c.kind, c.resource, c.message) for c in p.conflicts}
    assert got == {
        ("device", "deployments/chat-decode", "device 1 on host npu-node-1 is claimed by deployments chat-prefill "
         "and chat-decode"),
        ("devices", "deployments/chat-decode", "deployment chat-decode claims device 5 on host npu-node-1, which "
         "has 2 device(s) (0..1)"),
    }
    assert p.get("chat-decode", "npu-node-1").devices == ()


def test_not_enough_free_devices() -> None:
    """chat-prefill (TP 2 here) holds both devices of npu-node-1; chat-decode, unpinned, finds none free."""
    def edit(data: dict[str, Any]) -> None:
        _dep(data, "chat-prefill").update(tensor_parallel=2, devices=[0, 1])
        _dep(data, "chat-decode").update(hosts=["npu-node-1"], tensor_parallel=1)
        del _dep(data, "chat-decode")["devices"]
    p = placements(_site(edit), load_catalog())
    [c] = p.conflicts
    assert (c.kind, c.host, c.resource) == ("devices", "npu-node-1", "deployments/chat-decode")
    assert "needs 1 device(s) on host npu-node-1; only 0 of its 2 are free" in c.message


def test_ports_clash_per_address_not_per_host() -> None:
    """Two hosts on 127.0.0.1 share one stack; give one its own address and the same port is fine."""
    def same_port(data: dict[str, Any]) -> None:
        _dep(data, "chat-decode")["port"] = 8101
    clash = placements(_site(same_port), load_catalog())
    assert [(c.kind, c.host) for c in clash.conflicts] == [("port", "npu-node-2")]

    def own_address(data: dict[str, Any]) -> None:
        same_port(data)
        data["hosts"][1]["address"] = "127.0.0.2"
    assert placements(_site(own_address), load_catalog()).conflicts == ()


def test_a_deployment_on_two_hosts_sharing_an_address_clashes_with_itself() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["serving_groups"] = []
        for d in data["deployments"]:
            d["role"] = "both"
            del d["devices"]  # allocated first-fit: only the port may clash
        _dep(data, "chat-decode")["hosts"] = ["npu-node-1", "npu-node-2"]
        _dep(data, "chat-prefill")["hosts"] = ["npu-node-2"]
        data["hosts"][1]["accelerators"][0]["count"] = 4
    p = placements(_site(edit), load_catalog())
    assert [c.message for c in p.conflicts] == [
        "port 8102 on address 127.0.0.1 is used by deployments/chat-decode (serve, host npu-node-1) and "
        "deployments/chat-decode (serve, host npu-node-2)"]


def test_kv_sizes() -> None:
    model = _site().models[0]
    assert kv_bytes_per_token(model, "bf16") == 2 * 2 * 4 * 16 * 2
    assert kv_bytes_per_token(model, "fp8") == 2 * 2 * 4 * 16
    bare = Model.model_validate({**model.model_dump(exclude={"architecture"}), "dtype": "int4"})
    assert kv_bytes_per_token(bare, "bf16") is None
    dep = _site().deployments[0].model_copy(update={"kv_dtype": None})
    assert effective_kv_dtype(dep, model) == "bf16"
    assert effective_kv_dtype(dep, bare) == "int8"


def test_device_indexes_count_through_slots_in_order() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["hosts"][0]["accelerators"] = [{"kind": "rebellions-atom-max", "count": 1},
                                            {"kind": "furiosa-rngd", "count": 2}]
        _dep(data, "chat-prefill")["tensor_parallel"] = 2  # spans both slots
        del _dep(data, "chat-prefill")["devices"]
    host = _site(edit).hosts[0]
    assert host_devices(host) == ["rebellions-atom-max", "furiosa-rngd", "furiosa-rngd"]
    p = placements(_site(edit), load_catalog()).get("chat-prefill", "npu-node-1")
    assert p.devices == (0, 1) and p.device_memory_gb == 48  # the smaller of ATOM-Max 64 and RNGD 48
