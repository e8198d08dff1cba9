# The decision sovkit (and an OPA server) evaluates: data.sovkit.main.decision.
package sovkit.main

import rego.v1

import data.sovkit.findings
import data.sovkit.waivers

# One body, so each rule package is evaluated once (rego-cpp does not cache rule values across references).
# Findings are arrays (rego-cpp builds a set in quadratic time); each finding appears once (findings.rego).
decision := {"allowed": count(deny_set) == 0, "deny": deny_set, "warn": warn_set, "waived": waived_set} if {
	raw_deny := findings.deny
	raw_warn := findings.warn
	raw := array.concat(raw_deny, raw_warn)
	idx := waivers.index

	# Denials: unwaived rule findings plus waiver findings (expired waivers).
	deny_set := array.concat([f | some f in raw_deny; not idx[f.id][f.resource]], [f | some f in waivers.deny])

	# Warnings: unwaived rule warnings plus waiver notices (stale, expiring soon).
	notices := waivers.stale(raw, idx) | waivers.expiring
	warn_set := array.concat([f | some f in raw_warn; not idx[f.id][f.resource]], [f | some f in notices])

	# Waived findings stay visible, each with the waiver that covers it.
	waived_set := [object.union(f, {"waived": {"reason": w.reason, "expires": w.expires}}) |
		some f in raw
		w := idx[f.id][f.resource][0]
	]
}

deny := decision.deny

warn := decision.warn

waived := decision.waived

default allowed := false

allowed if decision.allowed == true
