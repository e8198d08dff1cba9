package sovkit.records_test

import rego.v1

import data.sovkit.records

_kr := {"name": "s", "operator": "acme", "jurisdiction": {"country": "KR", "region": "KR-11"}, "location": "KR-11"}

_de := {"name": "s", "operator": "acme", "jurisdiction": {"country": "DE", "region": null}, "location": "DE"}

_doc := {"location": "https://docs.example.kr", "jurisdiction": "KR", "retention_years": 10}

_label := {"methods": ["user-notice"], "reference": "terms §3"}

# A complete records section: documentation kept ten years, site-wide labelling, a domestic operator.
_rec := {
	"min_log_retention_days": null,
	"min_documentation_retention_years": null,
	"technical_documentation": _doc,
	"generated_output_labelling": _label,
	"operator_domestic_address": true,
	"domestic_representative": null,
}

_both := [{"name": "l", "url": "x", "jurisdiction": "KR", "retention_days": 183, "decision_log": true, "inference_log": true}]

_labelled := [{"deployment": "d", "model": "m", "generative": true, "declared_on": "site"}]

_ids(fs) := {f.id | some f in fs}

test_complete_records_pass if {
	s := _kr
	r := _rec
	l := _both
	o := _labelled
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
		with input.output_labelling as o
	count(d) == 0
}

test_partial_input_is_not_judged if {
	count(records.deny) == 0
}

test_log_001_no_decision_log if {
	s := _kr
	r := _rec
	l := [{"name": "l", "url": "x", "jurisdiction": "KR", "retention_days": 365, "decision_log": false, "inference_log": true}]
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
	_ids(d) == {"LOG-001"}
}

test_log_001_and_003_no_log_sinks_at_all if {
	s := _kr
	r := _rec
	l := []
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
	_ids(d) == {"LOG-001", "LOG-003"}
	every f in d {
		f.resource == "site/s"
	}
}

test_log_002_decision_log_too_short if {
	s := _kr
	r := _rec
	l := [
		{"name": "dec", "url": "x", "jurisdiction": "KR", "retention_days": 182, "decision_log": true, "inference_log": false},
		{"name": "inf", "url": "x", "jurisdiction": "KR", "retention_days": 183, "decision_log": false, "inference_log": true},
	]
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
	_ids(d) == {"LOG-002"}
	some f in d
	f.resource == "log_sinks/dec"
}

test_log_002_site_minimum_raises_the_floor if {
	s := _kr
	r := object.union(_rec, {"min_log_retention_days": 365})
	l := _both
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
	_ids(d) == {"LOG-002", "LOG-004"}
}

test_log_002_site_minimum_never_lowers_the_floor if {
	s := _kr
	r := object.union(_rec, {"min_log_retention_days": 30})
	l := [{"name": "l", "url": "x", "jurisdiction": "KR", "retention_days": 90, "decision_log": true, "inference_log": true}]
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
	_ids(d) == {"LOG-002", "LOG-004"}
	m := records.min_log_days with input.records as r
	m == 183
}

test_log_002_floor_from_data if {
	s := _kr
	r := _rec
	l := _both
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
		with data.sovkit.config.min_log_retention_days as 200
	_ids(d) == {"LOG-002", "LOG-004"}
}

test_log_003_no_inference_log if {
	s := _kr
	r := _rec
	l := [{"name": "l", "url": "x", "jurisdiction": "KR", "retention_days": 365, "decision_log": true, "inference_log": false}]
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
	_ids(d) == {"LOG-003"}
}

test_log_004_inference_log_too_short if {
	s := _kr
	r := _rec
	l := [
		{"name": "dec", "url": "x", "jurisdiction": "KR", "retention_days": 365, "decision_log": true, "inference_log": false},
		{"name": "inf", "url": "x", "jurisdiction": "KR", "retention_days": 30, "decision_log": false, "inference_log": true},
	]
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
	_ids(d) == {"LOG-004"}
	some f in d
	f.resource == "log_sinks/inf"
}

test_doc_001_missing if {
	s := _kr
	r := object.union(_rec, {"technical_documentation": null})
	l := _both
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
	_ids(d) == {"DOC-001"}
}

test_doc_001_kept_too_short if {
	s := _kr
	r := object.union(_rec, {"technical_documentation": object.union(_doc, {"retention_years": 5})})
	l := _both
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
	_ids(d) == {"DOC-001"}
}

test_doc_001_site_minimum if {
	s := _kr
	r := object.union(_rec, {"min_documentation_retention_years": 15})
	l := _both
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
	_ids(d) == {"DOC-001"}
}

test_gen_001_unlabelled_generative_deployment_in_korea if {
	s := _kr
	r := object.union(_rec, {"generated_output_labelling": null})
	l := _both
	o := [
		{"deployment": "chat", "model": "m", "generative": true, "declared_on": null},
		{"deployment": "own", "model": "m", "generative": true, "declared_on": "deployment"},
		{"deployment": "grouped", "model": "m", "generative": true, "declared_on": "serving_group"},
		{"deployment": "embed", "model": "e", "generative": false, "declared_on": null},
	]
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
		with input.output_labelling as o
	[f.resource | some f in d] == ["deployments/chat"]
	_ids(d) == {"GEN-001"}
}

test_gen_001_not_in_germany if {
	s := _de
	r := object.union(_rec, {"generated_output_labelling": null})
	l := _both
	o := [{"deployment": "chat", "model": "m", "generative": true, "declared_on": null}]
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
		with input.output_labelling as o
	count(d) == 0
}

test_gen_002_foreign_operator_without_representative if {
	s := _kr
	r := object.union(_rec, {"operator_domestic_address": false})
	l := _both
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
	_ids(d) == {"GEN-002"}
}

test_gen_002_representative_recorded if {
	s := _kr
	r := object.union(_rec, {"operator_domestic_address": false, "domestic_representative": {"name": "Rep Co", "contact": "rep@example.kr"}})
	l := _both
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
	count(d) == 0
}

test_gen_002_not_in_germany if {
	s := _de
	r := object.union(_rec, {"operator_domestic_address": false})
	l := _both
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
	count(d) == 0
}

test_findings_have_the_shape if {
	s := _kr
	r := object.union(_rec, {"technical_documentation": null, "operator_domestic_address": false})
	l := []
	d := records.deny with input.site as s with input.records as r with input.log_sinks as l
	count(d) == 4
	every f in d {
		object.keys(f) == {"id", "severity", "msg", "resource", "remediation"}
		f.severity == "deny"
	}
}
