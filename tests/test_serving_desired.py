"""What the serving kind renders for a host (pure, no hosts): the launch of each process, its devices and
ports, the router's upstreams, speculative decoding's draft model, and a refusal at plan with a clear message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sovkit.components.host import DesiredHost, desired_site
from sovkit.errors import PlanError
from sovkit.inventory import load_inventory
from tests.conftest import INVENTORIES

DEMO_SITE: dict[str, Any] = yaml.safe_load((INVENTORIES / "demo" / "site.yaml").read_text())


def _desired(tmp_path: Path, data: dict[str, Any]) -> dict[str, DesiredHost]:
    """Desired state of an edited copy of the demo inventory (kept beside the demo's keys and artifacts)."""
    path = INVENTORIES / "demo" / f".test-serving-{tmp_path.name}.yaml"
    try:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return desired_site(load_inventory(path))
    finally:
        path.unlink()


def _argv(want: Any) -> list[str]:
    argv: list[str] = json.loads(want.spec)["argv"]
    return argv


def _after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_the_demo_processes_are_launched_as_the_demo_profile_says() -> None:
    desired = desired_site(load_inventory(INVENTORIES / "demo"))
    prefill, router = desired["npu-node-1"].serving["chat-prefill"], desired["npu-node-1"].serving["chat-router"]
    decode = desired["npu-node-2"].serving["chat-decode"]
    argv = _argv(prefill)
    assert argv[1:4] == ["-m", "simnpu_serve", "serve"]
    assert argv[4].endswith("/hosts/npu-node-1/opt/sovkit/models/demo-ko-chat/current")
    assert (_after(argv, "--port"), _after(argv, "--devices"), _after(argv, "--tensor-parallel-size")) == (
        "8101", "npu:0", "1")  # the planned demo: TP 1 on device 0
    kv = json.loads(_after(argv, "--kv-transfer-config"))
    assert (kv["kv_role"], kv["kv_connector"], kv["kv_ip"], kv["kv_port"]) == (
        "kv_producer", "SovkitDemoConnector", "127.0.0.1", 8112)
    assert json.loads(_after(_argv(decode), "--kv-transfer-config"))["kv_role"] == "kv_consumer"
    env = json.loads(prefill.spec)["env"]
    assert env["SOVKIT_MODEL"] == "demo-ko-chat@1.0" and env["PYTHONPATH"].endswith("/simnpu-serve/1.0.0")
    r = _argv(router)
    assert r[1].endswith("/hosts/npu-node-1/usr/lib/sovkit/router.py")
    assert (_after(r, "--port"), _after(r, "--prefill"), _after(r, "--decode"), _after(r, "--decode-kv")) == (
        "8100", "http://127.0.0.1:8101", "http://127.0.0.1:8102", "127.0.0.1:8112")
    assert (router.takes_traffic, prefill.takes_traffic, decode.takes_traffic) == (True, False, False)
    assert prefill.unit == "" and prefill.service_manager == "supervisor"  # demo hosts have no systemd


def test_a_tensor_parallel_2_deployment_is_launched_on_both_its_devices(tmp_path: Path) -> None:
    data = json.loads(json.dumps(DEMO_SITE))
    data["deployments"][0].update(tensor_parallel=2, devices=[1, 0])
    prefill = _desired(tmp_path, data)["npu-node-1"].serving["chat-prefill"]
    argv = _argv(prefill)
    assert (_after(argv, "--devices"), _after(argv, "--tensor-parallel-size")) == ("npu:1,npu:0", "2")
    assert prefill.devices == (1, 0)


def test_two_deployments_on_one_host_get_their_own_devices(tmp_path: Path) -> None:
    data = json.loads(json.dumps(DEMO_SITE))
    data["serving_groups"] = []
    data["deployments"] = [
        {"name": "a", "model": "demo-ko-chat", "runtime": "simnpu-serve", "hosts": ["npu-node-1"],
         "tensor_parallel": 1, "port": 8201},
        {"name": "b", "model": "demo-ko-chat", "runtime": "simnpu-serve", "hosts": ["npu-node-1"],
         "tensor_parallel": 1, "port": 8202},
    ]
    serving = _desired(tmp_path, data)["npu-node-1"].serving
    assert (_after(_argv(serving["a"]), "--devices"), _after(_argv(serving["b"]), "--devices")) == (
        "npu:0", "npu:1")
    assert serving["a"].devices == (0,) and serving["b"].devices == (1,)
    assert "--kv-transfer-config" not in _argv(serving["a"]) and serving["a"].takes_traffic


def test_several_decode_hosts_are_all_behind_the_router(tmp_path: Path) -> None:
    data = json.loads(json.dumps(DEMO_SITE))
    extra = json.loads(json.dumps(data["hosts"][1]))
    extra.update(name="npu-node-3", address="127.0.0.3", root="hosts/npu-node-3")
    data["hosts"].append(extra)
    data["deployments"][1]["hosts"] = ["npu-node-2", "npu-node-3"]
    argv = _argv(_desired(tmp_path, data)["npu-node-1"].serving["chat-router"])
    pairs = [(argv[i], argv[i + 1]) for i in range(len(argv) - 1) if argv[i] in ("--decode", "--decode-kv")]
    assert pairs == [("--decode", "http://127.0.0.1:8102"), ("--decode-kv", "127.0.0.1:8112"),
                     ("--decode", "http://127.0.0.3:8102"), ("--decode-kv", "127.0.0.3:8112")]


def test_a_speculative_deployment_installs_its_draft_model_and_names_it(tmp_path: Path) -> None:
    data = json.loads(json.dumps(DEMO_SITE))
    draft = json.loads(json.dumps(data["models"][0]))
    draft["name"] = "demo-ko-draft"
    data["models"].append(draft)
    data["deployments"][1]["speculative"] = {"draft_model": "demo-ko-draft", "num_tokens": 3}
    host = _desired(tmp_path, data)["npu-node-2"]
    assert set(host.models) == {"demo-ko-chat", "demo-ko-draft"}
    spec = json.loads(_after(_argv(host.serving["chat-decode"]), "--speculative-config"))
    assert spec["model"].endswith("/opt/sovkit/models/demo-ko-draft/current") and spec["num_speculative_tokens"] == 3


def test_a_launch_that_cannot_be_placed_is_refused_at_plan_with_the_rule_to_read(tmp_path: Path) -> None:
    data = json.loads(json.dumps(DEMO_SITE))
    data["deployments"][0]["tensor_parallel"] = 4  # the host has 2 devices
    del data["deployments"][0]["devices"]  # unpinned: the placement, not the schema, finds too few
    with pytest.raises(PlanError) as err:
        _desired(tmp_path, data)
    assert "chat-prefill on host npu-node-1 cannot be launched" in err.value.message
    assert "SV-" in (err.value.hint or "")
