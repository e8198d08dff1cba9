# Capacity: rack power within budget, model weights fit the accelerators that serve them.
package sovkit.capacity

import rego.v1

import data.sovkit.lib

_warn_ratio := object.get(data.sovkit.config, "power_warn_ratio", 0.9)

_pct(x) := round(x * 1000) / 10

# CAP-001: rack draw (CPU + accelerator TDP from the catalog) within the rack's power budget.
deny contains lib.finding(
	"CAP-001", "deny",
	sprintf("rack %s draws %v W at TDP, over its %v W budget (%v%%)", [r.name, r.draw_w, r.power_budget_w, _pct(r.draw_w / r.power_budget_w)]),
	lib.res("racks", r.name),
	"move hosts or accelerators to another rack, or raise the rack's power_budget_w if the facility allows",
) if {
	some r in input.racks
	r.draw_w > r.power_budget_w
}

# CAP-002: warn above 90 % of the budget (data.sovkit.config.power_warn_ratio).
warn contains lib.finding(
	"CAP-002", "warn",
	sprintf("rack %s draws %v W at TDP, %v%% of its %v W budget", [r.name, r.draw_w, _pct(r.draw_w / r.power_budget_w), r.power_budget_w]),
	lib.res("racks", r.name),
	"little headroom is left: plan new hosts for another rack",
) if {
	some r in input.racks
	r.draw_w <= r.power_budget_w
	r.draw_w > _warn_ratio * r.power_budget_w
}

_hosts := {h.name: h | some h in input.hosts}

_models := {m.name: m | some m in input.models}

# CAP-003: one replica's weights fit in the memory of the tensor_parallel devices it spans on each host.
deny contains lib.finding(
	"CAP-003", "deny",
	sprintf("deployment %s: model %s weights (%v GB) do not fit in %d device(s) of host %s (%v GB)", [d.name, d.model, m.weights_bytes / 1e9, d.tensor_parallel, hn, usable]),
	lib.res("deployments", d.name),
	"raise tensor_parallel, use hosts with more accelerator memory, or a smaller (quantized) model",
) if {
	some d in input.deployments
	m := _models[d.model]
	some hn in d.hosts
	h := _hosts[hn]
	h.accelerator_count > 0
	h.accelerator_memory_gb != null
	usable := (h.accelerator_memory_gb / h.accelerator_count) * d.tensor_parallel
	m.weights_bytes > usable * 1e9
}

# CAP-004: tensor_parallel cannot exceed the accelerators a host has.
deny contains lib.finding(
	"CAP-004", "deny",
	sprintf("deployment %s wants tensor_parallel %d on host %s, which has %d accelerator(s)", [d.name, d.tensor_parallel, hn, _hosts[hn].accelerator_count]),
	lib.res("deployments", d.name),
	"lower tensor_parallel or deploy on hosts with enough accelerators",
) if {
	some d in input.deployments
	some hn in d.hosts
	d.tensor_parallel > _hosts[hn].accelerator_count
}

# CAP-005: a figure the checks need is unknown in the catalog, so a limit cannot be proven.
warn contains lib.finding(
	"CAP-005", "warn",
	sprintf("rack %s: TDP of %d component(s) unknown in the catalog; the %v W total is a lower bound", [r.name, r.unknown_tdp, r.draw_w]),
	lib.res("racks", r.name),
	"confirm the component's TDP and add it to the catalog",
) if {
	some r in input.racks
	r.unknown_tdp > 0
}

warn contains lib.finding(
	"CAP-005", "warn",
	sprintf("deployment %s: accelerator memory of host %s is unknown; cannot check that model %s fits", [d.name, hn, d.model]),
	lib.res("deployments", d.name),
	"confirm the accelerator's memory and add it to the catalog",
) if {
	some d in input.deployments
	some hn in d.hosts
	_hosts[hn].accelerator_memory_gb == null
}
