package sovkit.capacity_test

import rego.v1

import data.sovkit.capacity

_ids(fs) := {f.id | some f in fs}

_rack(draw) := {"name": "r", "power_budget_w": 1000, "hosts": 1, "accelerators": 2, "draw_w": draw, "unknown_tdp": 0}

_host := {"name": "h", "accelerator_count": 2, "accelerator_memory_gb": 128}

_model := {"name": "m", "weights_bytes": 70000000000}

_dep(tp) := {"name": "dep", "model": "m", "runtime": "rt", "hosts": ["h"], "role": "both", "tensor_parallel": tp, "port": 8000}

test_cap_001_over_budget if {
	rs := [_rack(1001)]
	_ids(capacity.deny) == {"CAP-001"} with input.racks as rs
	count(capacity.warn) == 0 with input.racks as rs
}

test_cap_002_above_90_percent_warns if {
	rs := [_rack(950)]
	count(capacity.deny) == 0 with input.racks as rs
	_ids(capacity.warn) == {"CAP-002"} with input.racks as rs
}

test_cap_00x_within_budget_passes if {
	rs := [_rack(900)]
	count(capacity.deny) == 0 with input.racks as rs
	count(capacity.warn) == 0 with input.racks as rs
}

test_cap_002_ratio_is_data if {
	rs := [_rack(850)]
	_ids(capacity.warn) == {"CAP-002"} with input.racks as rs with data.sovkit.config.power_warn_ratio as 0.8
}

test_cap_003_weights_do_not_fit if {
	hs := [_host]
	ms := [_model]
	ds := [_dep(1)]
	_ids(capacity.deny) == {"CAP-003"} with input.hosts as hs with input.models as ms with input.deployments as ds
}

test_cap_003_weights_fit_with_tensor_parallel if {
	hs := [_host]
	ms := [_model]
	ds := [_dep(2)]
	count(capacity.deny) == 0 with input.hosts as hs with input.models as ms with input.deployments as ds
}

test_cap_004_tensor_parallel_beyond_devices if {
	hs := [_host]
	ms := [_model]
	ds := [_dep(4)]
	_ids(capacity.deny) == {"CAP-004"} with input.hosts as hs with input.models as ms with input.deployments as ds
}

test_cap_005_unknown_figures_warn if {
	rs := [object.union(_rack(100), {"unknown_tdp": 2})]
	hs := [object.union(_host, {"accelerator_memory_gb": null})]
	ms := [_model]
	ds := [_dep(1)]
	w := capacity.warn with input.racks as rs with input.hosts as hs with input.models as ms with input.deployments as ds
	_ids(w) == {"CAP-005"}
	count(w) == 2
}
