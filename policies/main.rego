# The decision sovkit (and an OPA server) evaluates: data.sovkit.main.decision.
package sovkit.main

import rego.v1

import data.sovkit.findings
import data.sovkit.waivers

# Denials: unwaived rule findings plus waiver findings (expired waivers).
deny contains f if {
	some f in findings.deny
	not waivers.waived(f)
}

deny contains f if some f in waivers.deny

warn contains f if {
	some f in findings.warn
	not waivers.waived(f)
}

warn contains f if some f in waivers.warn

# Waived findings stay visible, each with the waiver that covers it.
waived contains object.union(f, {"waived": {"reason": w.reason, "expires": w.expires}}) if {
	some f in findings.deny | findings.warn
	w := waivers.waiver_of(f)
}

default allowed := false

allowed if count(deny) == 0

decision := {
	"allowed": allowed,
	"deny": deny,
	"warn": warn,
	"waived": waived,
}
