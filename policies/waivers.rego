# Waivers: an inventory may waive one rule for one resource, with a reason, until an expiry date.
# A waived finding stays visible (flagged with its waiver); an expired waiver is itself a denial.
package sovkit.waivers

import rego.v1

import data.sovkit.findings
import data.sovkit.lib

_day_ns := 86400000000000

_days(date) := time.parse_ns("2006-01-02", date) / _day_ns

# Days from the evaluation date (input.evaluated_on) to the waiver's expiry; negative once expired.
days_left(w) := _days(w.expires) - _days(input.evaluated_on)

active(w) if days_left(w) >= 0

matches(w, f) if {
	w.rule == f.id
	w.resource == f.resource
}

# Active waivers by rule id and resource, each list in inventory order. main.decision binds it once and
# looks findings up in it (one lookup per finding, not a scan of every waiver).
_active := [w | some w in input.waivers; active(w)]

_rules := {w.rule | some w in _active}

index := {rule: {res: [w | some w in _active; w.rule == rule; w.resource == res] |
	some res in {w.resource | some w in _active; w.rule == rule}
} |
	some rule in _rules
}

waived(f) if index[f.id][f.resource]

# The first active waiver that covers f (waivers are in inventory order).
waiver_of(f) := index[f.id][f.resource][0]

_resource(w) := concat("/", ["waivers", w.rule, w.resource])

# WVR-001: an expired waiver counts as a denial (and no longer waives anything).
deny contains lib.finding(
	"WVR-001", "deny",
	sprintf("waiver of %s for %s expired on %s (%s)", [w.rule, w.resource, w.expires, w.reason]),
	_resource(w),
	"fix the finding, or renew the waiver with a new expiry after review",
) if {
	some w in input.waivers
	not active(w)
}

# WVR-002: a waiver that matches no finding is stale. ``all`` is every finding before waivers
# (passed in, so the decision evaluates the rule packages once); ``idx`` is ``index``.
stale(all, idx) := {lib.finding(
	"WVR-002", "warn",
	sprintf("waiver of %s for %s matches no finding", [w.rule, w.resource]),
	_resource(w),
	"remove the stale waiver (or correct its rule id / resource name)",
) |
	used := [[f.id, f.resource] | some f in all; idx[f.id][f.resource]]
	some w in input.waivers
	active(w)
	not [w.rule, w.resource] in used
}

warn contains f if some f in stale(array.concat(findings.deny, findings.warn), index)

# WVR-003: a waiver expiring soon (data.sovkit.config.waiver_warn_days, default 30).
warn contains f if some f in expiring

expiring contains lib.finding(
	"WVR-003", "warn",
	sprintf("waiver of %s for %s expires on %s (in %d day(s))", [w.rule, w.resource, w.expires, days_left(w)]),
	_resource(w),
	"fix the finding before the waiver expires, or renew it after review",
) if {
	some w in input.waivers
	active(w)
	days_left(w) < object.get(data.sovkit.config, "waiver_warn_days", 30)
}
