package sovkit.capacity_test

import rego.v1

import data.sovkit.capacity

_ids(fs) := {f.id | some f in fs}

# a rack whose TDPs sum to `draw` and whose peak by phase is `peak`: 1 CPU at 200 W, 2 prefill devices
_rack2(draw, peak) := {
	"racks": ["r"], "power_budget_w": 1000, "hosts": 1, "accelerators": 2, "draw_w": draw, "unknown_tdp": 0,
	"peak_w": peak, "phase_devices": 2, "tdp_devices": 0,
	"peak_terms": [
		{"state": "cpu", "kind": "arm-neoverse-v2", "count": 1, "watts_each": 200},
		{"state": "prefill", "kind": "npu", "count": 2, "watts_each": (peak - 200) / 2},
	],
}

_rack(peak) := _rack2(peak, peak)

# replica_memory_gb as sovkit/policy/input.py computes it (2 accelerators)
_replica(mem, tp) := null if mem == null

_replica(mem, tp) := (mem / 2) * tp if mem != null

_place(tp, mem) := {"deployment": "dep", "hosts": ["h"], "model": "m", "runtime": "rt", "tensor_parallel": tp, "accelerator_count": 2, "accelerator_memory_gb": mem, "replica_memory_gb": _replica(mem, tp), "weights_bytes": 70000000000, "runtime_version": "1.0.0", "recorded_runtime": null}

test_cap_001_over_budget if {
	rs := [_rack(1001)]
	_ids(capacity.deny) == {"CAP-001"} with input.rack_shapes as rs
	count(capacity.warn) == 0 with input.rack_shapes as rs
}

test_cap_002_above_90_percent_warns if {
	rs := [_rack(950)]
	count(capacity.deny) == 0 with input.rack_shapes as rs
	_ids(capacity.warn) == {"CAP-002"} with input.rack_shapes as rs
}

test_cap_00x_within_budget_passes if {
	rs := [_rack(900)]
	count(capacity.deny) == 0 with input.rack_shapes as rs
	count(capacity.warn) == 0 with input.rack_shapes as rs
}

test_cap_001_names_each_rack_of_a_shape if {
	rs := [object.union(_rack(1001), {"racks": ["r", "s"]})]
	d := capacity.deny with input.rack_shapes as rs
	{f.resource | some f in d} == {"racks/r", "racks/s"}
	some f in d
	f.resource == "racks/s"
	f.msg == "rack s peaks at 1001 W (1 arm-neoverse-v2 (CPU at TDP) x 200 W + 2 npu (prefill) x 400.5 W), over its 1000 W budget (100.1%; all TDPs would sum to 1001 W)"
}

test_cap_002_ratio_is_data if {
	rs := [_rack(850)]
	_ids(capacity.warn) == {"CAP-002"} with input.rack_shapes as rs with data.sovkit.config.power_warn_ratio as 0.8
}

test_cap_003_weights_do_not_fit if {
	ps := [_place(1, 128)]
	_ids(capacity.deny) == {"CAP-003"} with input.placement_shapes as ps
}

test_cap_003_weights_fit_with_tensor_parallel if {
	ps := [_place(2, 128)]
	count(capacity.deny) == 0 with input.placement_shapes as ps
}

test_cap_004_tensor_parallel_beyond_devices if {
	ps := [_place(4, 1024)]
	_ids(capacity.deny) == {"CAP-004"} with input.placement_shapes as ps
}

test_cap_004_names_each_host_of_a_shape if {
	ps := [object.union(_place(4, 1024), {"hosts": ["h", "g"]})]
	d := capacity.deny with input.placement_shapes as ps
	{f.msg | some f in d} == {
		"deployment dep wants tensor_parallel 4 on host h, which has 2 accelerator(s)",
		"deployment dep wants tensor_parallel 4 on host g, which has 2 accelerator(s)",
	}
}

test_cap_005_unknown_figures_warn if {
	rs := [object.union(_rack(100), {"unknown_tdp": 2})]
	ps := [_place(1, null)]
	w := capacity.warn with input.rack_shapes as rs with input.placement_shapes as ps
	_ids(w) == {"CAP-005"}
	count(w) == 2
}

test_cap_001_judges_the_phase_peak_not_the_tdp_sum if {
	# TDPs sum over the budget, the peak by phase does not: allowed, no warning either
	under := [_rack2(1400, 850)]
	count(capacity.deny) == 0 with input.rack_shapes as under
	count(capacity.warn) == 0 with input.rack_shapes as under

	# the peak is over the budget: denied, and the message explains the numbers
	over := [_rack2(1400, 1100)]
	d := capacity.deny with input.rack_shapes as over
	_ids(d) == {"CAP-001"}
	some f in d
	f.msg == "rack r peaks at 1100 W (1 arm-neoverse-v2 (CPU at TDP) x 200 W + 2 npu (prefill) x 450 W), over its 1000 W budget (110%; all TDPs would sum to 1400 W)"
}
