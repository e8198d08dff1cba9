package sovkit.residency_test

import rego.v1

import data.sovkit.residency

_res := {"allowed_jurisdictions": ["KR"], "air_gapped": false, "allowed_egress": ["mirror.example.kr"], "transfers": []}

_site := {"name": "s", "jurisdiction": {"country": "KR", "region": "KR-11"}, "location": "KR-11"}

_ids(fs) := {f.id | some f in fs}

test_res_001_data_store_outside if {
	r := _res
	s := _site
	d := residency.deny with input.residency as r with input.site as s
		with input.data_stores as [{"name": "d", "jurisdiction": "US"}]
	"RES-001" in _ids(d)
}

test_res_001_data_store_subdivision_inside if {
	r := _res
	s := _site
	d := residency.deny with input.residency as r with input.site as s
		with input.data_stores as [{"name": "d", "jurisdiction": "KR-26"}]
	count(d) == 0
}

test_res_002_backup_outside if {
	r := _res
	s := _site
	d := residency.deny with input.residency as r with input.site as s
		with input.backups as [{"name": "b", "source": "d", "jurisdiction": "JP"}]
	"RES-002" in _ids(d)
}

test_res_003_telemetry_outside if {
	r := _res
	s := _site
	d := residency.deny with input.residency as r with input.site as s
		with input.telemetry as [{"name": "t", "url": "x", "jurisdiction": "US"}]
	"RES-003" in _ids(d)
}

test_res_004_log_sink_outside if {
	r := _res
	s := _site
	d := residency.deny with input.residency as r with input.site as s
		with input.log_sinks as [{"name": "l", "url": "x", "jurisdiction": "US"}]
	"RES-004" in _ids(d)
}

test_res_005_registry_outside if {
	r := _res
	s := _site
	d := residency.deny with input.residency as r with input.site as s
		with input.model_registries as [{"name": "r", "url": "x", "jurisdiction": "US"}]
	"RES-005" in _ids(d)
}

test_res_006_endpoint_outside if {
	r := _res
	s := _site
	d := residency.deny with input.residency as r with input.site as s
		with input.endpoints as [{"name": "e", "url": "https://e.us", "jurisdiction": "US", "direction": "ingress"}]
	"RES-006" in _ids(d)
}

test_res_00x_inside_passes if {
	r := _res
	s := _site
	d := residency.deny with input.residency as r with input.site as s
		with input.telemetry as [{"name": "t", "url": "x", "jurisdiction": "KR"}]
		with input.log_sinks as [{"name": "l", "url": "x", "jurisdiction": "KR-11"}]
	count(d) == 0
}

test_res_007_mirror_outside if {
	r := _res
	s := _site
	d := residency.deny with input.residency as r with input.site as s
		with input.artifact_store as {"kind": "oci", "repository": "r", "url": "https://m.example.com", "jurisdiction": "US"}
	"RES-007" in _ids(d)
}

test_res_007_mirror_inside if {
	r := _res
	s := _site
	d := residency.deny with input.residency as r with input.site as s
		with input.artifact_store as {"kind": "oci", "repository": "r", "url": "https://m.example.kr", "jurisdiction": "KR-11"}
	count(d) == 0
}

test_res_008_site_outside_its_allowed if {
	r := object.union(_res, {"allowed_jurisdictions": ["KR-26"]})
	s := _site
	d := residency.deny with input.residency as r with input.site as s
	"RES-008" in _ids(d)
}

test_res_009_host_elsewhere if {
	r := _res
	s := _site
	d := residency.deny with input.residency as r with input.site as s
		with input.host_shapes as [{"racks": [{"name": "r", "hosts": ["h", "i"]}], "jurisdiction": "JP"}, {"racks": [{"name": "r", "hosts": ["g"]}], "jurisdiction": "KR-11"}]
	_ids(d) == {"RES-009"}
	{f.resource | some f in d} == {"hosts/h", "hosts/i"}
	count(d) == 2
}

test_res_010_air_gapped_egress if {
	r := object.union(_res, {"air_gapped": true, "allowed_egress": []})
	s := _site
	d := residency.deny with input.residency as r
		with input.site as s
		with input.endpoints as [{"name": "e", "url": "https://x.kr", "jurisdiction": "KR", "direction": "egress"}]
	_ids(d) == {"RES-010"}
}

test_res_010_air_gapped_with_allowed_egress if {
	r := object.union(_res, {"air_gapped": true})
	s := _site
	d := residency.deny with input.residency as r with input.site as s
	_ids(d) == {"RES-010"}
}

test_res_010_air_gapped_ingress_only_passes if {
	r := object.union(_res, {"air_gapped": true, "allowed_egress": []})
	s := _site
	d := residency.deny with input.residency as r
		with input.site as s
		with input.endpoints as [{"name": "e", "url": "https://x.kr", "jurisdiction": "KR", "direction": "ingress"}]
	count(d) == 0
}

test_res_011_egress_not_allowed if {
	r := _res
	s := _site
	d := residency.deny with input.residency as r with input.site as s
		with input.endpoints as [{"name": "e", "url": "https://evil.example.kr:8443/x", "jurisdiction": "KR", "direction": "egress"}]
	_ids(d) == {"RES-011"}
}

test_res_011_egress_allowed if {
	r := _res
	s := _site
	d := residency.deny with input.residency as r with input.site as s
		with input.endpoints as [{"name": "e", "url": "https://mirror.example.kr/pkgs", "jurisdiction": "KR", "direction": "egress"}]
	count(d) == 0
}

_eu := {"allowed_jurisdictions": ["DE", "FR"], "air_gapped": false, "allowed_egress": [], "transfers": []}

_de := {"name": "s", "jurisdiction": {"country": "DE", "region": null}, "location": "DE"}

test_res_012_personal_data_abroad_without_basis if {
	r := _eu
	s := _de
	d := residency.deny with input.residency as r with input.site as s
		with input.data_stores as [{"name": "d", "jurisdiction": "FR", "personal_data": true}]
	_ids(d) == {"RES-012"}
}

test_res_012_backup_of_personal_store_abroad if {
	r := _eu
	s := _de
	d := residency.deny with input.residency as r with input.site as s
		with input.data_stores as [{"name": "d", "jurisdiction": "DE", "personal_data": true}]
		with input.backups as [{"name": "b", "source": "d", "jurisdiction": "FR"}]
	_ids(d) == {"RES-012"}
}

test_res_012_transfer_recorded_passes if {
	r := object.union(_eu, {"transfers": [{"name": "t", "destination": "FR", "basis": "adequacy", "reference": "r"}]})
	s := _de
	d := residency.deny with input.residency as r
		with input.site as s
		with input.data_stores as [{"name": "d", "jurisdiction": "FR", "personal_data": true}]
	count(d) == 0
}

test_res_012_non_personal_abroad_passes if {
	r := _eu
	s := _de
	d := residency.deny with input.residency as r with input.site as s
		with input.data_stores as [{"name": "d", "jurisdiction": "FR", "personal_data": false}]
	count(d) == 0
}
