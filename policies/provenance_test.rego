package sovkit.provenance_test

import rego.v1

import data.sovkit.provenance

_res := {"allowed_jurisdictions": ["KR"], "air_gapped": true, "allowed_egress": [], "transfers": []}

_sig := {"path": "m.sig", "format": "dsse", "signer": "pub", "checked": true, "verified": true, "keyid": "k", "reason": "ok"}

_model := {
	"name": "m", "version": "1.0", "publisher": "pub", "license": "apache-2.0", "origin": "KR",
	"base_models": [{"name": "b", "publisher": "pub", "origin": "KR", "license": "mit"}],
	"files": [{"path": "m/w.safetensors", "sha256": "745bb9cc5efe1a9f33e0ffb4c9060437c2ce5304f810c899ebd7e21cc66eabdb", "size": 10, "stored_size": 10}],
	"weights_bytes": 10, "signature": _sig, "dtype": "bf16", "parameters_b": null,
	"card": {"purpose": "p", "datasets": ["d"], "metrics": {}, "limitations": ""},
}

_ids(fs) := {f.id | some f in fs}

_with(patch) := [object.union(_model, patch)]

test_good_model_passes if {
	ms := [_model]
	r := _res
	d := provenance.deny with input.models as ms with input.residency as r
	w := provenance.warn with input.models as ms with input.residency as r
	count(d) == 0
	count(w) == 0
}

test_prv_001_latest_version if {
	ms := _with({"version": "latest"})
	"PRV-001" in _ids(provenance.deny) with input.models as ms
}

test_prv_001_range_version if {
	ms := _with({"version": ">=1.0"})
	"PRV-001" in _ids(provenance.deny) with input.models as ms
}

test_prv_001_unpinned_file if {
	ms := _with({"files": [{"path": "m/w", "sha256": "", "size": 1, "stored_size": null}]})
	"PRV-001" in _ids(provenance.deny) with input.models as ms
}

test_prv_002_unsigned if {
	ms := _with({"signature": object.union(_sig, {"path": null, "checked": false, "verified": false})})
	_ids(provenance.deny) == {"PRV-002"} with input.models as ms
}

test_prv_003_signature_does_not_verify if {
	ms := _with({"signature": object.union(_sig, {"verified": false, "reason": "signature by pub does not verify"})})
	_ids(provenance.deny) == {"PRV-003"} with input.models as ms
}

test_prv_004_licence_not_allowed if {
	ms := _with({"license": "proprietary-eula"})
	_ids(provenance.deny) == {"PRV-004"} with input.models as ms
}

test_prv_004_base_model_licence_not_allowed if {
	ms := _with({"base_models": [{"name": "b", "publisher": "x", "origin": "KR", "license": "research-only"}]})
	_ids(provenance.deny) == {"PRV-004"} with input.models as ms
}

test_prv_004_licence_case_insensitive if {
	ms := _with({"license": "Apache-2.0"})
	count(provenance.deny) == 0 with input.models as ms
}

test_prv_005_no_card if {
	ms := [object.remove(_model, ["card"])]
	_ids(provenance.deny) == {"PRV-005"} with input.models as ms
}

test_prv_006_unchecked_signature_warns if {
	ms := _with({"signature": object.union(_sig, {"checked": false, "verified": false, "reason": "mirror"})})
	r := _res
	count(provenance.deny) == 0 with input.models as ms with input.residency as r
	_ids(provenance.warn) == {"PRV-006"} with input.models as ms with input.residency as r
}

test_prv_007_deployment_of_failing_model if {
	ms := _with({"license": "proprietary-eula"})
	ds := [{"name": "dep", "model": "m", "runtime": "rt", "hosts": ["h"], "role": "both", "tensor_parallel": 1, "port": 8000}]
	d := provenance.deny with input.models as ms with input.deployments as ds
	"PRV-007" in _ids(d)
	some f in d
	f.id == "PRV-007"
	f.resource == "deployments/dep"
	contains(f.msg, "PRV-004")
}

test_prv_007_deployment_of_passing_model if {
	ms := [_model]
	ds := [{"name": "dep", "model": "m", "runtime": "rt", "hosts": ["h"], "role": "both", "tensor_parallel": 1, "port": 8000}]
	count(provenance.deny) == 0 with input.models as ms with input.deployments as ds
}

test_prv_008_foreign_base_model_warns if {
	ms := _with({"base_models": [{"name": "qwen", "publisher": "alibaba", "origin": "CN", "license": "apache-2.0"}]})
	r := _res
	_ids(provenance.warn) == {"PRV-008"} with input.models as ms with input.residency as r
}
