# The decision sovkit (and an OPA server) evaluates: data.sovkit.main.decision.
package sovkit.main

import rego.v1

import data.sovkit.findings
import data.sovkit.waivers

# One body, so each rule package is evaluated once (rego-cpp does not cache rule values across references).
decision := {"allowed": count(deny_set) == 0, "deny": deny_set, "warn": warn_set, "waived": waived_set} if {
	raw_deny := findings.deny
	raw_warn := findings.warn
	raw := raw_deny | raw_warn

	# Denials: unwaived rule findings plus waiver findings (expired waivers).
	deny_set := {f | some f in raw_deny; not waivers.waived(f)} | waivers.deny

	# Warnings: unwaived rule warnings plus waiver notices (stale, expiring soon).
	warn_set := ({f | some f in raw_warn; not waivers.waived(f)} | waivers.stale(raw)) | waivers.expiring

	# Waived findings stay visible, each with the waiver that covers it.
	waived_set := {object.union(f, {"waived": {"reason": w.reason, "expires": w.expires}}) |
		some f in raw
		w := waivers.waiver_of(f)
	}
}

deny := decision.deny

warn := decision.warn

waived := decision.waived

default allowed := false

allowed if decision.allowed == true
