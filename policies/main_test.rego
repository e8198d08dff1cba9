package sovkit.main_test

import rego.v1

import data.sovkit.main

test_empty_input_is_allowed if {
	d := main.decision
	d.allowed == true
	count(d.deny) == 0
}

test_every_finding_has_the_shape if {
	ms := [{"name": "m", "version": "latest", "license": "x", "origin": "KR", "base_models": [], "files": [], "signature": {"path": null}}]
	d := main.decision with input.models as ms
	d.allowed == false
	count(d.deny) > 0
	every f in d.deny {
		object.keys(f) == {"id", "severity", "msg", "resource", "remediation"}
		f.severity == "deny"
	}
}

test_custom_operator_rules_are_aggregated if {
	extra := {{"id": "ACME-1", "severity": "deny", "msg": "m", "resource": "site/s", "remediation": "r"}}
	d := main.decision with data.sovkit.custom.acme.deny as extra
	d.allowed == false
	some f in d.deny
	f.id == "ACME-1"
}

test_allowed_follows_the_denials if {
	r := {"allowed_jurisdictions": ["KR"], "air_gapped": false, "allowed_egress": [], "transfers": []}
	inside := [{"name": "t", "url": "x", "jurisdiction": "KR"}]
	outside := [{"name": "t", "url": "x", "jurisdiction": "US"}]
	d1 := main.decision with input.residency as r with input.telemetry as inside
	d1.allowed == true
	d2 := main.decision with input.residency as r with input.telemetry as outside
	d2.allowed == false
}
