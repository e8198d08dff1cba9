"""Policy uses the serving planner: predicted latency against declared targets (SV-008/009), and rack power at its
peak by phase rather than TDP sums (CAP-001/002). Real sites (sitefactory copies of the demo), the real predictor,
the real Rego through `sovkit check`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sovkit.catalog import load_catalog
from sovkit.inventory import load_inventory
from sovkit.planner.forecast import SitePredictor, forecast_deployments, rack_peaks, request_forecast, site_predictor
from sovkit.planner.hardware import DeviceSpec, device_spec
from sovkit.planner.modelshape import ModelShape
from sovkit.planner.perf import Prediction, Workload
from sovkit.planner.search import LINK_GBS
from sovkit.policy.input import build_input
from tests.conftest import CliResult
from tests.sitefactory import DEMO, KIND, Site, make_site


def _as_printed(ms: float) -> float:
    """policies/serving.rego's _ms: 0.1 ms from 1 ms up, 0.001 ms below."""
    return round(ms * 10) / 10 if ms >= 1 else round(ms * 1000) / 1000 if ms >= 0.001 else ms


def _check(cli: Callable[..., CliResult], site: Site) -> tuple[int, dict[str, Any]]:
    r = cli("check", site.save(), "--json")
    assert r.out.strip(), r.err
    return r.code, json.loads(r.out)


def _dep(site: Site, name: str) -> dict[str, Any]:
    return next(d for d in site.data["deployments"] if d["name"] == name)


def _prediction(site: Site, deployment: str) -> dict[str, Any]:
    doc = build_input(load_inventory(site.save()))
    return next(p for p in doc["serving"]["predictions"] if p["deployment"] == deployment)


def test_impossible_targets_warn_with_the_predicted_numbers(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)
    _dep(site, "chat-prefill")["targets"] = {"ttft_ms": 1e-6}
    _dep(site, "chat-decode")["targets"] = {"tpot_ms": 1e-6}
    p = _prediction(site, "chat-prefill")
    # the group's TTFT: prefill of one max_model_len/2-token prompt on the prefill side, plus the KV transfer
    assert p["group"] == "chat" and p["prompt_tokens"] == 2048 and p["accelerator"] == KIND
    assert p["ttft_ms"] == p["prefill_ms"] + p["kv_transfer_ms"] and p["ttft_ms"] > 1e-6 and p["error"] is None
    d = _prediction(site, "chat-decode")
    assert d["tpot_ms"] == p["tpot_ms"] and d["tpot_ms"] > 1e-6

    code, decision = _check(cli, site)
    hits = {f["resource"]: f for f in decision["findings"] if f["id"] == "SV-008"}
    assert set(hits) == {"deployments/chat-prefill", "deployments/chat-decode"}, decision["findings"]
    assert code == 0 and decision["allowed"] is True and {f["severity"] for f in hits.values()} == {"warn"}
    ttft = hits["deployments/chat-prefill"]
    said = re.search(r"predicted time to first token ([0-9.e+-]+) ms misses its ([0-9.e+-]+) ms target", ttft["msg"])
    assert said is not None, ttft["msg"]
    assert float(said.group(1)) == _as_printed(p["ttft_ms"]) and float(said.group(2)) == 1e-6
    assert f"for one 2048-token prompt on {KIND} at TP 1" in ttft["msg"]
    assert ("uncalibrated" in ttft["msg"]) == (not p["calibrated"])
    assert "sovkit serving plan" in ttft["remediation"]
    tpot = hits["deployments/chat-decode"]
    assert "predicted time per output token" in tpot["msg"] and "one decode step of 5782 sequences" in tpot["msg"]

    # targets the prediction meets: no finding
    _dep(site, "chat-prefill")["targets"] = {"ttft_ms": p["ttft_ms"] * 2}
    _dep(site, "chat-decode")["targets"] = {"tpot_ms": d["tpot_ms"] * 2}
    code, decision = _check(cli, site)
    assert not [f for f in decision["findings"] if f["id"] in {"SV-008", "SV-009"}], decision["findings"]


def test_targets_without_a_model_config_cannot_be_checked(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)
    site.model("demo-ko-chat").pop("config")
    _dep(site, "chat-prefill").pop("targets")
    _dep(site, "chat-decode")["targets"] = {"tpot_ms": 50}
    code, decision = _check(cli, site)
    hits = [f for f in decision["findings"] if f["id"] == "SV-009"]
    assert [f["resource"] for f in hits] == ["deployments/chat-decode"], decision["findings"]
    assert "declares no config" in hits[0]["msg"] and code == 0


def _phase_w(state: str) -> float:
    spec = device_spec(load_catalog(), KIND)
    return {"prefill": spec.power_prefill_w, "decode": spec.power_decode_w, "idle": spec.power_idle_w}[state]


def test_rack_is_judged_at_its_phase_peak_not_its_tdp_sum(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)
    rack = build_input(load_inventory(site.save()))["rack_shapes"][0]
    catalog = load_catalog()
    cpu_w = catalog.cpus["arm-neoverse-v2"].tdp_w.value
    tdp_w = catalog.accelerators[KIND].tdp_w.value
    assert cpu_w is not None and tdp_w is not None
    # demo rack: two CPUs, one device serving prefill (node 1), one serving decode (node 2), the other two idle
    assert rack["draw_w"] == 2 * cpu_w + 4 * tdp_w
    assert rack["peak_w"] == 2 * cpu_w + _phase_w("prefill") + _phase_w("decode") + 2 * _phase_w("idle")
    assert rack["peak_w"] < rack["draw_w"] and rack["phase_devices"] == 4 and rack["tdp_devices"] == 0

    # a budget between the phase peak and the TDP sum: the TDP-sum rule would deny, the phase-power one allows
    site.data["racks"][0]["power_budget_w"] = (rack["peak_w"] + rack["draw_w"]) / 2
    code, decision = _check(cli, site)
    assert code == 0 and not [f for f in decision["findings"] if f["id"] == "CAP-001"], decision["findings"]

    # below the peak: denied, and the message gives the peak, its terms and the budget
    site.data["racks"][0]["power_budget_w"] = rack["peak_w"] - 1
    code, decision = _check(cli, site)
    hits = [f for f in decision["findings"] if f["id"] == "CAP-001"]
    assert code == 3 and len(hits) == 1, decision["findings"]
    msg = hits[0]["msg"]
    assert f"rack demo-rack peaks at {rack['peak_w']:g} W" in msg
    assert f"1 {KIND} (prefill) x {_phase_w('prefill'):g} W" in msg
    assert f"1 {KIND} (decode) x {_phase_w('decode'):g} W" in msg
    assert f"2 {KIND} (idle) x {_phase_w('idle'):g} W" in msg
    assert f"2 arm-neoverse-v2 (CPU at TDP) x {cpu_w:g} W" in msg
    assert f"all TDPs would sum to {rack['draw_w']:g} W" in msg


def test_unassigned_devices_count_idle(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    for h in site.data["hosts"]:
        h["accelerators"][0]["count"] = 4  # three devices per host that no deployment uses (the demo's use index 0)
    rack = build_input(load_inventory(site.save()))["rack_shapes"][0]
    idle = next(t for t in rack["peak_terms"] if t["state"] == "idle")
    assert idle == {"state": "idle", "kind": KIND, "count": 6, "watts_each": _phase_w("idle")}


class _Counting:
    """The shipped predictor, counting how often it is asked (memoization keeps big sites fast)."""

    def __init__(self) -> None:
        self.inner = site_predictor()
        self.calls = 0

    def predict(self, shape: ModelShape, device: DeviceSpec, work: Workload) -> Prediction:
        self.calls += 1
        return self.inner.predict(shape, device, work)


def test_predictions_are_memoized_per_shape(tmp_path: Path) -> None:
    hosts = [{"name": f"npu-node-{i}", "rack": "demo-rack", "address": "127.0.0.1", "arch": "aarch64",
              "cpu": "arm-neoverse-v2", "service_manager": "supervisor", "connection": "local",
              "root": f"hosts/npu-node-{i}", "accelerators": [{"kind": KIND, "count": 2,
                                                               "firmware": "atom-max-fw-1.2.0"}]}
             for i in range(1, 13)]
    site = make_site(tmp_path, hosts=hosts)
    site.data["racks"][0]["power_budget_w"] = 100_000
    inv = load_inventory(site.save())
    counting = _Counting()
    sp = SitePredictor(inv.site, inv.root, load_catalog(), counting)
    forecasts = forecast_deployments(sp)
    # 11 decode hosts and one prefill host, one shape each side: batch 1 and batch max_batch, at most 2 + 2 calls
    assert len(forecasts) == 2 and all(f.error is None for f in forecasts)
    assert counting.calls <= 4
    assert rack_peaks(sp)[0].phase_devices == 24


def test_request_forecast_is_for_the_request_the_demo_sends() -> None:
    """`sovkit serving request` prints this beside its measurement: the same prompt, batch 1, the group's chips."""
    inv = load_inventory(DEMO)
    sp = SitePredictor(inv.site, inv.root, load_catalog(), site_predictor())
    prompt = "안녕하세요, sovkit"
    f = request_forecast(sp, prompt)
    assert f is not None and f.unit == "chat" and f.simulated is True
    # the demo model's vocabulary is its 256 bytes, as the demo runtime counts: bytes are tokens
    assert f.prompt_tokens == len(prompt.encode()) == 23 and f.tokens_estimated is False
    assert f.front.deployment == "chat-prefill" and f.decode is not None and f.decode.deployment == "chat-decode"
    assert f.front.prefill_ms is not None and f.front.kv_transfer_ms is not None and f.ttft_ms is not None
    assert f.ttft_ms == f.front.prefill_ms + f.front.kv_transfer_ms
    # KV of 23 tokens (512 bytes each in bf16) over the loopback link's nominal bandwidth
    assert f.front.kv_transfer_ms == 23 * 512 / (LINK_GBS["loopback"][0] * 1e9) * 1e3
    assert f.front.context_tokens == 23 and f.tpot_ms is not None and f.tpot_ms > 0
    assert request_forecast(sp, prompt, "no-such-unit") is None
