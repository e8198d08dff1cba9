# Serving: prefill/decode pairs that match, runtimes on accelerators they support, devices and ports that do
# not clash, models plus KV cache that fit, draft models that are pinned and signed.
# input.serving is joined and placed in Python (sovkit/inventory/serving.py): these rules only compare.
# serving.placement_shapes: a deployment on hosts with identical facts, judged once, each host named (the failing
# shapes are collected in an array first, then expanded: in one body rego-cpp may walk every host first).
package sovkit.serving

import rego.v1

import data.sovkit.lib

_families := object.get(data.sovkit.config, "runtime_families", {})

_headroom := object.get(data.sovkit.config, "serving_memory_headroom", 0.1)

_gb(x) := round(x / 1e7) / 100

# SV-001: a prefill or decode deployment is paired in a serving group; group members have the right roles.
_sv001_deny := [lib.finding(
	"SV-001", "deny",
	sprintf("deployment %s has role %s but is in no serving group, so nothing hands it the other half of a request", [d.name, d.role]),
	lib.res("deployments", d.name),
	"pair it with a decode (or prefill) deployment in serving_groups[], or set role: both for plain serving",
) |
	some d in input.serving.deployments
	d.role in {"prefill", "decode"}
	d.group == null
]

_deny contains lib.finding(
	"SV-001", "deny",
	sprintf("serving group %s uses deployment %s as %s, but its role is %s", [g.name, s.deployment, name, s.role]),
	lib.res("serving_groups", g.name),
	"give the group's prefill deployment role: prefill and its decode deployment role: decode",
) if {
	some g in input.serving.groups
	some name in ["prefill", "decode"]
	s := g[name]
	s != null
	s.role != name
}

_pair_fields := [["model", "model"], ["model_version", "model version"], ["runtime_family", "runtime family"], ["kv_dtype", "KV dtype"]]

# SV-002: both halves serve the same model version with the same runtime family and KV dtype.
_deny contains lib.finding(
	"SV-002", "deny",
	sprintf("serving group %s: prefill %s and decode %s differ in %s (%v vs %v)", [g.name, g.prefill.deployment, g.decode.deployment, label, g.prefill[key], g.decode[key]]),
	lib.res("serving_groups", g.name),
	"serve one model version with one runtime family and one kv_dtype on both sides: the decode side reads the KV cache the prefill side wrote",
) if {
	some g in input.serving.groups
	g.prefill != null
	g.decode != null
	some pair in _pair_fields
	key := pair[0]
	label := pair[1]
	g.prefill[key] != g.decode[key]
}

# SV-003: the runtime family supports the accelerators it is placed on, and the group's KV connector.
_sv003_deny := [lib.finding(
	"SV-003", "deny",
	msg,
	lib.res("deployments", p.deployment),
	"use a runtime of a family that supports the host's accelerators (vllm: nvidia, vllm-rbln: rebellions, furiosa-llm: furiosa), or place the deployment on other hosts",
) |
	some x in _sv003
	p := x.shape
	some host in p.hosts

	# built with concat: rego-cpp leaves quotes in a sprintf %s of a joined list here (invalid JSON out)
	msg := concat("", [
		sprintf("deployment %s runs runtime family %s on host %s, whose %s accelerators it does not support", [p.deployment, p.runtime_family, host, x.vendor]),
		x.supports,
	])
]

_sv003 := [{"shape": p, "vendor": vendor, "supports": concat("", [" (it supports: ", _list(fam.vendors), ")"])} |
	some p in input.serving.placement_shapes
	fam := _families[p.runtime_family]
	some vendor in p.accelerator_vendors
	not vendor in fam.vendors
]

_sv003_deny_2 := [lib.finding(
	"SV-003", "deny",
	sprintf("deployment %s: runtime family %s has no entry in data.sovkit.config.runtime_families, so its accelerator support is unknown", [p.deployment, p.runtime_family]),
	lib.res("deployments", p.deployment),
	"add the family (vendors, connectors, sources) to runtime_families in the policy data",
) |
	some p in input.serving.placement_shapes
	p.runtime_family != null
	not _families[p.runtime_family]
]

_deny contains lib.finding(
	"SV-003", "deny",
	msg,
	lib.res("serving_groups", g.name),
	"pick a connector the runtime supports (e.g. NixlConnector for vllm, RblnNixlConnector for vllm-rbln), or a runtime that does disaggregated serving",
) if {
	some g in input.serving.groups
	some family in {s.runtime_family | some name in ["prefill", "decode"]; s := g[name]; s != null}
	fam := _families[family]
	not g.connector in fam.connectors
	msg := concat("", [
		sprintf("serving group %s: KV connector %s is not one runtime family %s supports", [g.name, g.connector, family]),
		" (it supports: ", _list(fam.connectors), ")",
	])
}

_list(xs) := "none" if count(xs) == 0

_list(xs) := concat(", ", xs) if count(xs) > 0

# SV-004: no accelerator device claimed twice on a host; enough free devices for every deployment.
_sv004_deny := [lib.finding(
	"SV-004", "deny", c.message, c.resource,
	"give each deployment its own devices: fix devices: lists, lower tensor_parallel, or move a deployment to another host",
) |
	some c in input.serving.conflicts
	c.kind in {"device", "devices"}
]

# SV-005: no port used twice on one address (hosts sharing an address share its ports).
_sv005_deny := [lib.finding(
	"SV-005", "deny", c.message, c.resource,
	"give each deployment, KV listener (kv_transfer.port) and router its own port on that address",
) |
	some c in input.serving.conflicts
	c.kind == "port"
]

# SV-006: weights per device plus the KV cache for max_model_len x max_batch fit the device, with headroom.
# need_bytes_per_device (weights + KV cache) and device_memory_bytes are summed and scaled in Python: rego-cpp
# spends ~30 us per arithmetic operation and placement. One pass keeps the placements over the warn threshold
# (or over the device, if the headroom is negative); the deny and the warn split those few.
_cut := min([1, 1 - _headroom])

_over := [p |
	some p in input.serving.placement_shapes
	n := p.need_bytes_per_device
	n != null
	m := p.device_memory_bytes
	m != null
	n > _cut * m
]

_sv006_deny := [lib.finding(
	"SV-006", "deny",
	sprintf("deployment %s on host %s needs %v GB per device (weights %v GB + KV cache %v GB for %d tokens x %d sequences), more than the %v GB a device has", [p.deployment, host, _gb(p.need_bytes_per_device), _gb(p.weights_bytes_per_device), _gb(p.kv_cache_bytes_per_device), p.max_model_len, p.max_batch, p.device_memory_gb]),
	lib.res("deployments", p.deployment),
	"lower max_model_len or max_batch, use a smaller kv_dtype (fp8), raise tensor_parallel, or use devices with more memory",
) |
	some p in _over_deny
	some host in p.hosts
]

_over_deny := [p | some p in _over; p.need_bytes_per_device > p.device_memory_bytes]

_sv006_warn := [lib.finding(
	"SV-006", "warn",
	sprintf("deployment %s on host %s needs %v GB of a device's %v GB: less than the %v%% headroom is left for activations and fragmentation", [p.deployment, host, _gb(p.need_bytes_per_device), p.device_memory_gb, round(_headroom * 100)]),
	lib.res("deployments", p.deployment),
	"lower max_model_len or max_batch, use kv_dtype fp8, or raise tensor_parallel (headroom: serving_memory_headroom in the policy data)",
) |
	some p in _over_warn
	some host in p.hosts
]

_over_warn := [p |
	some p in _over
	p.need_bytes_per_device <= p.device_memory_bytes
	p.need_bytes_per_device > (1 - _headroom) * p.device_memory_bytes
]

_sv006_warn_2 := [lib.finding(
	"SV-006", "warn",
	sprintf("deployment %s: model %s has no architecture, so its KV cache cannot be sized; only the weights were checked against device memory", [p.deployment, p.model]),
	lib.res("deployments", p.deployment),
	"add models[].architecture {layers, kv_heads, head_dim} (from the model's config.json)",
) |
	some p in input.serving.placement_shapes
	p.kv_bytes_per_token == null
	p.weights_bytes_per_device != null
]

_sv006_deny_2 := [lib.finding(
	"SV-006", "deny",
	sprintf("deployment %s on host %s: the weights alone need %v GB per device, more than the %v GB a device has", [p.deployment, host, _gb(p.weights_bytes_per_device), p.device_memory_gb]),
	lib.res("deployments", p.deployment),
	"raise tensor_parallel, use devices with more memory, or a smaller (quantized) model",
) |
	some p in _weights_over
	some host in p.hosts
]

_weights_over := [p |
	some p in input.serving.placement_shapes
	p.kv_bytes_per_token == null
	p.device_memory_bytes != null
	p.weights_bytes_per_device != null
	p.weights_bytes_per_device > p.device_memory_bytes
]

# SV-007: a speculative-decoding draft model is pinned and carries a verifying publisher signature.
_sv007_deny := [lib.finding(
	"SV-007", "deny",
	sprintf("deployment %s: draft model %s version %s is not pinned", [s.deployment, s.draft_model, s.version]),
	lib.res("deployments", s.deployment),
	"pin the draft model's exact version, as for any served model",
) |
	some s in input.serving.drafts
	s.found == true
	not lib.pinned_version(s.version)
]

_sv007_deny_2 := [lib.finding(
	"SV-007", "deny",
	sprintf("deployment %s: draft model %s has no publisher signature", [s.deployment, s.draft_model]),
	lib.res("deployments", s.deployment),
	"obtain the publisher's signature over the draft model's files and set models[].signature",
) |
	some s in input.serving.drafts
	s.found == true
	s.signature.path == null
]

_sv007_deny_3 := [lib.finding(
	"SV-007", "deny",
	sprintf("deployment %s: draft model %s signature does not verify: %s", [s.deployment, s.draft_model, s.signature.reason]),
	lib.res("deployments", s.deployment),
	"fetch the approved draft model and its signature again, or check trust_roots.publishers",
) |
	some s in input.serving.drafts
	s.found == true
	s.signature.path != null
	s.signature.checked == true
	s.signature.verified != true
]

# SV-008: the planner's predicted latency meets the deployment's declared targets.
# input.serving.predictions is computed in Python (sovkit/planner/forecast.py); the rule only compares. A serving
# group's deployments share the group's numbers (TTFT: prefill + KV transfer; TPOT: the decode step).
# milliseconds as the messages print them: 0.1 ms from 1 ms up, 0.001 ms below, as they are under 1 us
_ms(x) := round(x * 10) / 10 if x >= 1

_ms(x) := round(x * 1000) / 1000 if {
	x < 1
	x >= 0.001
}

_ms(x) := x if x < 0.001

_calib(p) := sprintf("calibrated: %s", [p.calibration_source]) if p.calibrated == true

_calib(p) := "uncalibrated: an estimate from catalog figures and default efficiencies" if p.calibrated != true

_in_group(p) := "" if p.group == null

_in_group(p) := sprintf(" (serving group %s)", [p.group]) if p.group != null

_prefill_parts(p) := sprintf("prefill %v ms", [_ms(p.prefill_ms)]) if p.kv_transfer_ms == null

_prefill_parts(p) := sprintf("prefill %v ms + KV transfer %v ms", [_ms(p.prefill_ms), _ms(p.kv_transfer_ms)]) if p.kv_transfer_ms != null

_sv008_warn := [lib.finding(
	"SV-008", "warn",
	msg,
	lib.res("deployments", p.deployment),
	"prefill is compute-bound: raise the prefill side's tensor_parallel or move it to a chip with more TFLOPS, shorten max_model_len, or let `sovkit serving plan` choose a placement that meets the targets (`sovkit serving calibrate` makes the prediction firmer)",
) |
	some p in input.serving.predictions
	p.target_ttft_ms != null
	p.ttft_ms != null
	p.ttft_ms > p.target_ttft_ms
	msg := concat("", [
		sprintf("deployment %s%s: predicted time to first token %v ms misses its %v ms target (", [p.deployment, _in_group(p), _ms(p.ttft_ms), p.target_ttft_ms]),
		_prefill_parts(p),
		sprintf(" for one %d-token prompt on %s at TP %d; ", [p.prompt_tokens, p.accelerator, p.tensor_parallel]),
		_calib(p), ")",
	])
]

_sv008_warn_2 := [lib.finding(
	"SV-008", "warn",
	msg,
	lib.res("deployments", p.deployment),
	"decode is memory-bandwidth-bound: lower max_batch, raise the decode side's tensor_parallel or move it to a chip with more memory bandwidth, use kv_dtype fp8, or let `sovkit serving plan` choose a placement that meets the targets (`sovkit serving calibrate` makes the prediction firmer)",
) |
	some p in input.serving.predictions
	p.target_tpot_ms != null
	p.tpot_ms != null
	p.tpot_ms > p.target_tpot_ms
	msg := concat("", [
		sprintf("deployment %s%s: predicted time per output token %v ms misses its %v ms target (one decode step of %d sequences with %d tokens of context each, on %s at TP %d; ", [p.deployment, _in_group(p), _ms(p.tpot_ms), p.target_tpot_ms, p.max_batch, p.context_tokens, p.accelerator, p.tensor_parallel]),
		_calib(p), ")",
	])
]

# SV-009: a deployment declares targets the planner cannot check (no model config, unknown chip figures).
_sv009_warn := [lib.finding(
	"SV-009", "warn",
	sprintf("deployment %s declares latency targets, but its latency cannot be predicted: %s", [p.deployment, p.error]),
	lib.res("deployments", p.deployment),
	"set models[].config to the model's config.json, and make sure the catalog has the accelerator's compute, bandwidth and power figures",
) |
	some p in input.serving.predictions
	p.error != null
	_has_targets(p)
]

_has_targets(p) if p.target_ttft_ms != null

_has_targets(p) if p.target_tpot_ms != null

# Rules over per-host collections build arrays: rego-cpp builds a set in quadratic time.
deny := [f |
	some part in [[f | some f in _deny], _sv001_deny, _sv003_deny, _sv003_deny_2, _sv004_deny, _sv005_deny, _sv006_deny, _sv006_deny_2, _sv007_deny, _sv007_deny_2, _sv007_deny_3]
	some f in part
]

# Rules over per-host collections build arrays: rego-cpp builds a set in quadratic time.
warn := [f |
	some part in [_sv006_warn, _sv006_warn_2, _sv008_warn, _sv008_warn_2, _sv009_warn]
	some f in part
]
