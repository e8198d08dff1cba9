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

test_allowed_is_consistent_with_deny if {
	r := {"allowed_jurisdictions": ["KR"], "air_gapped": false, "allowed_egress": [], "transfers": []}
	t := [{"name": "t", "url": "x", "jurisdiction": "KR"}]
	d := main.decision with input.residency as r with input.telemetry as t
	d.allowed == true
	t2 := [{"name": "t", "url": "x", "jurisdiction": "US"}]
	d2 := main.decision with input.residency as r with input.telemetry as t2
	d2.allowed == false
}
