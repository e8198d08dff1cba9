# Capacity: rack peak power within budget, model weights fit the accelerators that serve them.
package sovkit.capacity

import rego.v1

import data.sovkit.lib

_warn_ratio := object.get(data.sovkit.config, "power_warn_ratio", 0.9)

_pct(x) := round(x * 1000) / 10

# Rack power is judged at its peak by phase (input.rack_shapes[].peak_w, sovkit/planner/forecast.py): devices of prefill
# (and co-located) deployments at their prefill power, decode devices at decode power, unassigned devices idle,
# CPUs at TDP; a kind without phase-power figures counts at TDP. draw_w (all TDPs) is quoted for comparison.
_states := {"cpu": "CPU at TDP", "prefill": "prefill", "decode": "decode", "idle": "idle", "tdp": "at TDP, no phase figure"}

_terms(r) := concat(" + ", [sprintf("%d %s (%s) x %v W", [t.count, t.kind, _states[t.state], t.watts_each]) | some t in r.peak_terms])

# Racks come grouped by shape (input.rack_shapes: racks with identical power figures): a rule judges a shape and
# builds the message's tail once, then names each of its racks. Every shape rule first collects the failing shapes
# in an array of its own, then expands them: in one body rego-cpp may walk every member before the conditions.

# CAP-001: the rack's peak phase power within its power budget.
_cap001_deny := [lib.finding(
	"CAP-001", "deny",
	concat("", [sprintf("rack %s peaks at %v W (", [name, r.peak_w]), tail]),
	lib.res("racks", name),
	"move hosts or accelerators to another rack, cap the devices' power (power_cap_w), move decode to lower-power chips, or raise the rack's power_budget_w if the facility allows",
) |
	some x in _cap001
	r := x.shape
	tail := x.tail
	some name in r.racks
]

_cap001 := [{"shape": r, "tail": tail} |
	some r in input.rack_shapes
	r.peak_w > r.power_budget_w

	# built with concat: rego-cpp leaves quotes in a sprintf %s of a joined list (invalid JSON out)
	tail := concat("", [
		_terms(r),
		sprintf("), over its %v W budget (%v%%; all TDPs would sum to %v W)", [r.power_budget_w, _pct(r.peak_w / r.power_budget_w), r.draw_w]),
	])
]

# CAP-002: warn above 90 % of the budget (data.sovkit.config.power_warn_ratio).
_cap002_warn := [lib.finding(
	"CAP-002", "warn",
	concat("", [sprintf("rack %s peaks at %v W (", [name, r.peak_w]), tail]),
	lib.res("racks", name),
	"little headroom is left: plan new hosts for another rack",
) |
	some x in _cap002
	r := x.shape
	tail := x.tail
	some name in r.racks
]

_cap002 := [{"shape": r, "tail": tail} |
	some r in input.rack_shapes
	r.peak_w <= r.power_budget_w
	r.peak_w > _warn_ratio * r.power_budget_w
	tail := concat("", [_terms(r), sprintf("), %v%% of its %v W budget", [_pct(r.peak_w / r.power_budget_w), r.power_budget_w])])
]

# Placement shapes (a deployment on hosts with identical facts, input.placement_shapes) carry the joined facts:
# joins by name are quadratic in rego-cpp. A rule judges a shape once and names each of its hosts.

# CAP-003: one replica's weights fit in the memory of the tensor_parallel devices it spans on each host
# (replica_memory_gb: (accelerator_memory_gb / accelerator_count) x tensor_parallel, computed in Python).
_cap003_deny := [lib.finding(
	"CAP-003", "deny",
	sprintf("deployment %s: model %s weights (%v GB) do not fit in %d device(s) of host %s (%v GB)", [p.deployment, p.model, p.weights_bytes / 1e9, p.tensor_parallel, host, p.replica_memory_gb]),
	lib.res("deployments", p.deployment),
	"raise tensor_parallel, use hosts with more accelerator memory, or a smaller (quantized) model",
) |
	some p in _cap003
	some host in p.hosts
]

_cap003 := [p |
	some p in input.placement_shapes
	usable := p.replica_memory_gb
	usable != null
	p.weights_bytes != null
	p.weights_bytes > usable * 1e9
]

# CAP-004: tensor_parallel cannot exceed the accelerators a host has.
_cap004_deny := [lib.finding(
	"CAP-004", "deny",
	sprintf("deployment %s wants tensor_parallel %d on host %s, which has %d accelerator(s)", [p.deployment, p.tensor_parallel, host, p.accelerator_count]),
	lib.res("deployments", p.deployment),
	"lower tensor_parallel or deploy on hosts with enough accelerators",
) |
	some p in _cap004
	some host in p.hosts
]

_cap004 := [p | some p in input.placement_shapes; p.tensor_parallel > p.accelerator_count]

# CAP-005: a figure the checks need is unknown in the catalog, so a limit cannot be proven.
_cap005_warn := [lib.finding(
	"CAP-005", "warn",
	sprintf("rack %s: TDP of %d component(s) unknown in the catalog; the %v W total is a lower bound", [name, r.unknown_tdp, r.draw_w]),
	lib.res("racks", name),
	"confirm the component's TDP and add it to the catalog",
) |
	some r in _cap005
	some name in r.racks
]

_cap005 := [r | some r in input.rack_shapes; r.unknown_tdp > 0]

_cap005_warn_2 := [lib.finding(
	"CAP-005", "warn",
	sprintf("deployment %s: accelerator memory of host %s is unknown; cannot check that model %s fits", [p.deployment, host, p.model]),
	lib.res("deployments", p.deployment),
	"confirm the accelerator's memory and add it to the catalog",
) |
	some p in _cap005_2
	some host in p.hosts
]

_cap005_2 := [p | some p in input.placement_shapes; p.accelerator_memory_gb == null]

# Rules over per-host collections build arrays: rego-cpp builds a set in quadratic time.
deny := [f |
	some part in [_cap001_deny, _cap003_deny, _cap004_deny]
	some f in part
]

# Rules over per-host collections build arrays: rego-cpp builds a set in quadratic time.
warn := [f |
	some part in [_cap002_warn, _cap005_warn, _cap005_warn_2]
	some f in part
]
