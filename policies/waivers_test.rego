package sovkit.waivers_test

import rego.v1

import data.sovkit.main
import data.sovkit.waivers

_ids(fs) := {f.id | some f in fs}

_res := {"allowed_jurisdictions": ["KR"], "air_gapped": false, "allowed_egress": [], "transfers": []}

_site := {"name": "s", "jurisdiction": {"country": "KR", "region": null}, "location": "KR"}

# One RES-003 denial to waive.
_telemetry := [{"name": "t", "url": "https://t.example.com", "jurisdiction": "US"}]

_waiver(expires) := {"rule": "RES-003", "resource": "telemetry/t", "reason": "vendor support until migration (CR-17)", "expires": expires}

test_unwaived_denial_denies if {
	r := _res
	s := _site
	t := _telemetry
	d := main.decision with input.residency as r with input.site as s with input.telemetry as t with input.evaluated_on as "2026-06-01"
	d.allowed == false
	_ids(d.deny) == {"RES-003"}
}

test_active_waiver_allows_and_stays_visible if {
	r := _res
	s := _site
	t := _telemetry
	ws := [_waiver("2026-12-31")]
	d := main.decision with input.residency as r with input.site as s with input.telemetry as t
		with input.waivers as ws with input.evaluated_on as "2026-06-01"
	d.allowed == true
	count(d.deny) == 0
	some f in d.waived
	f.id == "RES-003"
	f.waived.reason == "vendor support until migration (CR-17)"
	f.waived.expires == "2026-12-31"
}

test_waiver_for_another_resource_does_not_apply if {
	r := _res
	s := _site
	t := _telemetry
	ws := [{"rule": "RES-003", "resource": "telemetry/other", "reason": "x", "expires": "2026-12-31"}]
	d := main.decision with input.residency as r with input.site as s with input.telemetry as t
		with input.waivers as ws with input.evaluated_on as "2026-06-01"
	d.allowed == false
	_ids(d.deny) == {"RES-003"}
	"WVR-002" in _ids(d.warn)
}

test_wvr_001_expired_waiver_denies if {
	r := _res
	s := _site
	t := _telemetry
	ws := [_waiver("2026-05-31")]
	d := main.decision with input.residency as r with input.site as s with input.telemetry as t
		with input.waivers as ws with input.evaluated_on as "2026-06-01"
	d.allowed == false
	_ids(d.deny) == {"RES-003", "WVR-001"}
	count(d.waived) == 0
}

test_waiver_valid_on_its_expiry_day if {
	ws := [_waiver("2026-06-01")]
	count(waivers.deny) == 0 with input.waivers as ws with input.evaluated_on as "2026-06-01"
}

test_wvr_002_stale_waiver_warns if {
	ws := [_waiver("2026-12-31")]
	_ids(waivers.warn) == {"WVR-002"} with input.waivers as ws with input.evaluated_on as "2026-06-01"
}

test_wvr_003_expiring_soon_warns if {
	r := _res
	s := _site
	t := _telemetry
	ws := [_waiver("2026-06-20")]
	d := main.decision with input.residency as r with input.site as s with input.telemetry as t
		with input.waivers as ws with input.evaluated_on as "2026-06-01"
	d.allowed == true
	_ids(d.warn) == {"WVR-003"}
	some f in d.warn
	contains(f.msg, "in 19 day(s)")
}
