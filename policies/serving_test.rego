package sovkit.serving_test

import rego.v1

import data.sovkit.serving

_ids(fs) := {f.id | some f in fs}

_side(dep, role) := {"deployment": dep, "role": role, "model": "m", "model_version": "1.0", "runtime": "rt", "runtime_family": "vllm", "kv_dtype": "bf16"}

_group := {
	"name": "g", "prefill": _side("p", "prefill"), "decode": _side("d", "decode"),
	"connector": "NixlConnector", "link": "rdma", "kv_port": 14579, "router_host": "h1", "router_port": 8000,
}

# 8 B weights per device + 4 GB KV cache on an 80 GB device: fits with headroom.
_place := {
	"deployment": "p", "hosts": ["h1"], "group": "g", "model": "m", "runtime_family": "vllm", "tensor_parallel": 2,
	"accelerator_vendors": ["nvidia"], "device_memory_gb": 80, "device_memory_bytes": 80e9,
	"weights_bytes_per_device": 8e9, "kv_bytes_per_token": 131072, "kv_cache_bytes_per_device": 4e9,
	"need_bytes_per_device": 12e9, "max_model_len": 4096, "max_batch": 8,
}

_sig := {"path": "d.sig", "format": "dsse", "signer": "pub", "checked": true, "verified": true, "keyid": "k", "reason": "ok"}

_draft := {"deployment": "p", "draft_model": "small", "method": "draft_model", "num_tokens": 4, "found": true, "version": "1.0", "signature": _sig}

_serving := {
	"deployments": [
		{"name": "p", "role": "prefill", "group": "g", "side": "prefill"},
		{"name": "d", "role": "decode", "group": "g", "side": "decode"},
	],
	"groups": [_group],
	"placement_shapes": [_place],
	"conflicts": [],
	"drafts": [_draft],
}

_with(patch) := object.union(_serving, patch)

# A patched placement with its derived sizes recomputed as sovkit/policy/input.py does.
_place_with(patch) := _with({"placement_shapes": [_sized(object.union(_place, patch))]})

_sized(p) := object.union(p, {"device_memory_bytes": _times(p.device_memory_gb, 1e9), "need_bytes_per_device": _sum(p.weights_bytes_per_device, p.kv_cache_bytes_per_device)})

_times(x, y) := null if x == null

_times(x, y) := x * y if x != null

_sum(x, y) := null if {
	some v in [x, y]
	v == null
}

_sum(x, y) := x + y if {
	x != null
	y != null
}

_group_with(patch) := _with({"groups": [object.union(_group, patch)]})

test_good_serving_passes if {
	count(serving.deny) == 0 with input.serving as _serving
	count(serving.warn) == 0 with input.serving as _serving
}

test_plain_deployment_needs_no_group if {
	s := _with({"deployments": [{"name": "x", "role": "both", "group": null, "side": null}], "groups": []})
	count(serving.deny) == 0 with input.serving as s
}

test_sv_001_unpaired_prefill if {
	s := _with({"deployments": [{"name": "p", "role": "prefill", "group": null, "side": null}], "groups": []})
	_ids(serving.deny) == {"SV-001"} with input.serving as s
}

test_sv_001_group_member_with_wrong_role if {
	s := _group_with({"decode": _side("d", "both")})
	_ids(serving.deny) == {"SV-001"} with input.serving as s
	some f in serving.deny with input.serving as s
	f.resource == "serving_groups/g"
}

test_sv_002_model_version_differs if {
	s := _group_with({"decode": object.union(_side("d", "decode"), {"model_version": "1.1"})})
	_ids(serving.deny) == {"SV-002"} with input.serving as s
}

test_sv_002_kv_dtype_differs if {
	s := _group_with({"decode": object.union(_side("d", "decode"), {"kv_dtype": "fp8"})})
	_ids(serving.deny) == {"SV-002"} with input.serving as s
}

test_sv_002_runtime_family_differs if {
	# vllm-rbln does not know NixlConnector either: SV-003 joins SV-002
	s := _group_with({"decode": object.union(_side("d", "decode"), {"runtime_family": "vllm-rbln"})})
	_ids(serving.deny) == {"SV-002", "SV-003"} with input.serving as s
}

test_sv_003_family_on_unsupported_accelerator if {
	s := _place_with({"runtime_family": "furiosa-llm"})
	_ids(serving.deny) == {"SV-003"} with input.serving as s
}

test_sv_003_family_missing_from_data if {
	s := _place_with({"runtime_family": "vllm"})
	_ids(serving.deny) == {"SV-003"} with input.serving as s with data.sovkit.config.runtime_families as {}
}

test_sv_003_connector_not_supported if {
	s := _group_with({"connector": "RblnNixlConnector"})
	_ids(serving.deny) == {"SV-003"} with input.serving as s
}

test_sv_003_family_without_disaggregation if {
	fam := {"deployment": "x", "role": "prefill", "model": "m", "model_version": "1.0", "runtime": "f", "runtime_family": "furiosa-llm", "kv_dtype": "bf16"}
	s := _group_with({"prefill": fam, "decode": object.union(fam, {"role": "decode"})})
	_ids(serving.deny) == {"SV-003"} with input.serving as s
}

test_sv_004_device_claimed_twice if {
	s := _with({"conflicts": [{"kind": "device", "host": "h1", "resource": "deployments/d", "message": "device 0 on host h1 is claimed by deployments p and d"}]})
	_ids(serving.deny) == {"SV-004"} with input.serving as s
}

test_sv_004_not_enough_devices if {
	s := _with({"conflicts": [{"kind": "devices", "host": "h1", "resource": "deployments/d", "message": "needs 2"}]})
	_ids(serving.deny) == {"SV-004"} with input.serving as s
}

test_sv_005_port_clash if {
	s := _with({"conflicts": [{"kind": "port", "host": "h1", "resource": "serving_groups/g", "message": "port 8000 on address 10.0.0.1"}]})
	_ids(serving.deny) == {"SV-005"} with input.serving as s
}

test_sv_006_does_not_fit if {
	s := _place_with({"kv_cache_bytes_per_device": 73e9})
	_ids(serving.deny) == {"SV-006"} with input.serving as s
}

test_sv_006_little_headroom_warns if {
	# 8 + 65 = 73 GB of 80: fits, but above 90 %
	s := _place_with({"kv_cache_bytes_per_device": 65e9})
	count(serving.deny) == 0 with input.serving as s
	_ids(serving.warn) == {"SV-006"} with input.serving as s
}

test_sv_006_headroom_is_configurable if {
	s := _place_with({"kv_cache_bytes_per_device": 65e9})
	count(serving.warn) == 0 with input.serving as s with data.sovkit.config.serving_memory_headroom as 0.05
}

test_sv_006_no_architecture_warns_never_silent if {
	s := _place_with({"kv_bytes_per_token": null, "kv_cache_bytes_per_device": null})
	count(serving.deny) == 0 with input.serving as s
	_ids(serving.warn) == {"SV-006"} with input.serving as s
}

test_sv_006_no_architecture_weights_alone_too_big if {
	s := _place_with({"kv_bytes_per_token": null, "kv_cache_bytes_per_device": null, "weights_bytes_per_device": 90e9})
	_ids(serving.deny) == {"SV-006"} with input.serving as s
}

test_sv_007_draft_unpinned if {
	s := _with({"drafts": [object.union(_draft, {"version": "latest"})]})
	_ids(serving.deny) == {"SV-007"} with input.serving as s
}

test_sv_007_draft_unsigned if {
	s := _with({"drafts": [object.union(_draft, {"signature": object.union(_sig, {"path": null, "checked": false, "verified": false})})]})
	_ids(serving.deny) == {"SV-007"} with input.serving as s
}

test_sv_007_draft_signature_does_not_verify if {
	s := _with({"drafts": [object.union(_draft, {"signature": object.union(_sig, {"verified": false, "reason": "bad"})})]})
	_ids(serving.deny) == {"SV-007"} with input.serving as s
}

# A serving group's forecast: TTFT 180 ms (prefill 150 + KV transfer 30), TPOT 25 ms.
_pred := {
	"deployment": "p", "group": "g", "role": "prefill", "accelerator": "nvidia-h100-sxm", "tensor_parallel": 2,
	"max_batch": 8, "prompt_tokens": 2048, "context_tokens": 3072, "prefill_ms": 150, "kv_transfer_ms": 30, "ttft_ms": 180, "tpot_ms": 25,
	"calibrated": false, "calibration_source": "uncalibrated (default efficiencies)",
	"target_ttft_ms": null, "target_tpot_ms": null, "error": null,
}

_predicted(patch) := {"predictions": [object.union(_pred, patch)]}

test_sv_008_targets_met_pass if {
	s := _predicted({"target_ttft_ms": 200, "target_tpot_ms": 25})
	count(serving.warn) == 0 with input.serving as s
}

test_sv_008_no_targets_no_finding if {
	count(serving.warn) == 0 with input.serving as _predicted({})
}

test_sv_008_ttft_miss_warns_with_the_numbers if {
	w := serving.warn with input.serving as _predicted({"target_ttft_ms": 100})
	_ids(w) == {"SV-008"}
	count(w) == 1
	some f in w
	f.msg == "deployment p (serving group g): predicted time to first token 180 ms misses its 100 ms target (prefill 150 ms + KV transfer 30 ms for one 2048-token prompt on nvidia-h100-sxm at TP 2; uncalibrated: an estimate from catalog figures and default efficiencies)"
	contains(f.remediation, "sovkit serving plan")
	count(serving.deny) == 0 with input.serving as _predicted({"target_ttft_ms": 100})
}

test_sv_008_tpot_miss_warns_and_says_calibrated if {
	w := serving.warn with input.serving as _predicted({"target_tpot_ms": 20, "calibrated": true, "calibration_source": "catalog: vendor benchmark"})
	_ids(w) == {"SV-008"}
	some f in w
	f.msg == "deployment p (serving group g): predicted time per output token 25 ms misses its 20 ms target (one decode step of 8 sequences with 3072 tokens of context each, on nvidia-h100-sxm at TP 2; calibrated: catalog: vendor benchmark)"
	contains(f.remediation, "max_batch")
}

test_sv_008_both_targets_missed_two_findings if {
	w := serving.warn with input.serving as _predicted({"target_ttft_ms": 100, "target_tpot_ms": 10})
	count(w) == 2
}

test_sv_008_plain_deployment_without_kv_transfer if {
	w := serving.warn with input.serving as _predicted({"group": null, "kv_transfer_ms": null, "ttft_ms": 150, "target_ttft_ms": 100})
	some f in w
	startswith(f.msg, "deployment p: predicted time to first token 150 ms misses its 100 ms target (prefill 150 ms for one")
}

test_sv_009_targets_without_prediction_warn if {
	s := _predicted({"error": "model m declares no config (its config.json)", "prefill_ms": null, "kv_transfer_ms": null, "ttft_ms": null, "tpot_ms": null, "target_tpot_ms": 20})
	w := serving.warn with input.serving as s
	_ids(w) == {"SV-009"}
	some f in w
	contains(f.msg, "model m declares no config")
}

test_sv_009_no_targets_no_warning if {
	s := _predicted({"error": "model m declares no config (its config.json)", "ttft_ms": null, "tpot_ms": null})
	count(serving.warn) == 0 with input.serving as s
}

test_sv_008_small_times_keep_their_digits if {
	w := serving.warn with input.serving as _predicted({"tpot_ms": 0.007989, "target_tpot_ms": 0.005})
	some f in w
	startswith(f.msg, "deployment p (serving group g): predicted time per output token 0.008 ms misses its 0.005 ms target")
}
