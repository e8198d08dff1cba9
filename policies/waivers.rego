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

waived(f) if {
	some w in input.waivers
	active(w)
	matches(w, f)
}

# The first active waiver that covers f (waivers are in inventory order).
waiver_of(f) := ws[0] if {
	ws := [w | some w in input.waivers; active(w); matches(w, f)]
	count(ws) > 0
}

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

# WVR-002: a waiver that matches no finding is stale.
warn contains lib.finding(
	"WVR-002", "warn",
	sprintf("waiver of %s for %s matches no finding", [w.rule, w.resource]),
	_resource(w),
	"remove the stale waiver (or correct its rule id / resource name)",
) if {
	some w in input.waivers
	active(w)
	not _used(w)
}

_used(w) if {
	some f in findings.deny | findings.warn
	matches(w, f)
}

# WVR-003: a waiver expiring soon (data.sovkit.config.waiver_warn_days, default 30).
warn contains lib.finding(
	"WVR-003", "warn",
	sprintf("waiver of %s for %s expires on %s (in %d day(s))", [w.rule, w.resource, w.expires, days_left(w)]),
	_resource(w),
	"fix the finding before the waiver expires, or renew it after review",
) if {
	some w in input.waivers
	active(w)
	days_left(w) < object.get(data.sovkit.config, "waiver_warn_days", 30)
}
