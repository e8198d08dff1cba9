package sovkit.runtime_test

import rego.v1

import data.sovkit.runtime

_sig := {"path": "rt.sig", "format": "dsse", "signer": "rebellions", "checked": true, "verified": true, "keyid": "k", "reason": "ok"}

_rt := {
	"name": "rt", "version": "1.0.0", "vendor": "rebellions", "package": "rt", "format": "wheelhouse",
	"artifacts": [{"path": "rt.whl", "sha256": "4ee622d7d3dfc4e22abe06a7cc62069877166c744aee12c6f533976c3ef8dbde", "size": 1, "stored_size": 1}],
	"signature": _sig,
}

_deps := [{"name": "dep", "model": "m", "runtime": "rt", "hosts": ["h"], "role": "both", "tensor_parallel": 1, "port": 8000}]

_ids(fs) := {f.id | some f in fs}

_with(patch) := [object.union(_rt, patch)]

test_good_runtime_passes if {
	rts := [_rt]
	count(runtime.deny) == 0 with input.runtimes as rts
	count(runtime.warn) == 0 with input.runtimes as rts
}

test_rt_001_unpinned if {
	every v in ["latest", ">=0.9", "0.9.*"] {
		rts := _with({"version": v})
		_ids(runtime.deny) == {"RT-001"} with input.runtimes as rts
	}
}

test_rt_002_no_vendor if {
	rts := _with({"vendor": null})
	_ids(runtime.deny) == {"RT-002"} with input.runtimes as rts
}

test_rt_002_vendor_not_allowlisted if {
	rts := _with({"vendor": "acme"})
	_ids(runtime.deny) == {"RT-002"} with input.runtimes as rts
}

test_rt_003_unsigned if {
	rts := _with({"signature": object.union(_sig, {"path": null, "checked": false, "verified": false})})
	_ids(runtime.deny) == {"RT-003"} with input.runtimes as rts
}

test_rt_004_signature_does_not_verify if {
	rts := _with({"signature": object.union(_sig, {"verified": false, "reason": "bad"})})
	_ids(runtime.deny) == {"RT-004"} with input.runtimes as rts
}

test_rt_005_downgrade_against_state if {
	ps := [{"deployment": "dep", "hosts": ["h"], "model": "m", "runtime": "rt", "tensor_parallel": 1, "accelerator_count": 1, "accelerator_memory_gb": 64, "weights_bytes": 1, "runtime_version": "1.0.0", "recorded_runtime": "1.1.0"}]
	_ids(runtime.deny) == {"RT-005"} with input.placement_shapes as ps
}

test_rt_005_same_version_passes if {
	ps := [{"deployment": "dep", "hosts": ["h"], "model": "m", "runtime": "rt", "tensor_parallel": 1, "accelerator_count": 1, "accelerator_memory_gb": 64, "weights_bytes": 1, "runtime_version": "1.0.0", "recorded_runtime": "1.0.0"}]
	count(runtime.deny) == 0 with input.placement_shapes as ps
}

test_rt_006_unchecked_warns if {
	rts := _with({"signature": object.union(_sig, {"checked": false, "verified": false, "reason": "mirror"})})
	_ids(runtime.warn) == {"RT-006"} with input.runtimes as rts
}
