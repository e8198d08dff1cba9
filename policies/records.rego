# Records the law asks of an operator: decision and inference logs kept long enough (AI Act Arts. 12, 19,
# 26(6)), the technical documentation kept ten years (Art. 18), and what Korea's AI Basic Act asks of operators
# of generative AI (labelled output, a domestic representative of a foreign operator).
package sovkit.records

import rego.v1

import data.sovkit.lib

_site := lib.res("site", input.site.name)

# The pack's floors (data.sovkit.config); a site may raise them in records, never lower them.
_floor_days := object.get(data.sovkit.config, "min_log_retention_days", 183)

_floor_years := object.get(data.sovkit.config, "min_documentation_retention_years", 10)

_site_days := object.get(object.get(input, "records", {}), "min_log_retention_days", null)

_site_years := object.get(object.get(input, "records", {}), "min_documentation_retention_years", null)

# The higher of the pack's floor and the site's own minimum (null: none). Not max(): rego-cpp's max compares
# numbers as text (max([183, 30]) is 30).
_higher(floor, own) := floor if own == null

_higher(floor, own) := floor if {
	own != null
	own <= floor
}

_higher(floor, own) := own if {
	own != null
	own > floor
}

# The minimum days a decision or inference log is kept.
min_log_days := _higher(_floor_days, _site_days)

# The minimum years the technical documentation is kept.
min_doc_years := _higher(_floor_years, _site_years)

# A section that is absent (a partial input in a unit test) is not judged: sovkit's input always has them all.
_judged(section) if is_array(input[section])

_judged(section) if is_object(input[section])

_korea if input.site.jurisdiction.country == "KR"

_kind := {"decision_log": "decision", "inference_log": "inference"}

_example := {"decision_log": "decision-log", "inference_log": "inference-log"}

_has(flag) if {
	some s in input.log_sinks
	s[flag] == true
}

# LOG-001 / LOG-003: the site keeps a decision log and an inference log somewhere.
deny contains lib.finding(
	id, "deny",
	sprintf("no log sink holds the %s log (log_sinks[] with %s: true); AI Act Arts. 12 and 19 ask for automatic logs kept for a set period", [_kind[flag], flag]),
	_site,
	sprintf("add a log sink inside the allowed jurisdictions with %s: true and retention_days of at least %d, e.g. log_sinks: [{name: %s, url: <where>, jurisdiction: <inside>, retention_days: %d, %s: true}] (or set %s: true on an existing sink)", [flag, min_log_days, _example[flag], min_log_days, flag, flag]),
) if {
	some flag, id in {"decision_log": "LOG-001", "inference_log": "LOG-003"}
	_judged("log_sinks")
	not _has(flag)
}

# LOG-002 / LOG-004: a decision- or inference-log sink keeps its records at least the minimum.
deny contains lib.finding(
	id, "deny",
	sprintf("log sink %s holds the %s log but keeps it %d day(s), fewer than the minimum %d (AI Act Arts. 19(1), 26(6): at least six months, or longer under the operator's law)", [s.name, _kind[flag], s.retention_days, min_log_days]),
	lib.res("log_sinks", s.name),
	sprintf("set retention_days: %d (or more) on log sink %s; the minimum is the higher of the pack's floor (data.sovkit.config.min_log_retention_days) and records.min_log_retention_days", [min_log_days, s.name]),
) if {
	some flag, id in {"decision_log": "LOG-002", "inference_log": "LOG-004"}
	some s in input.log_sinks
	s[flag] == true
	s.retention_days < min_log_days
}

# DOC-001: the technical documentation is recorded, and kept at least the minimum years (AI Act Art. 18).
deny contains lib.finding(
	"DOC-001", "deny",
	"no technical documentation is recorded (records.technical_documentation); AI Act Art. 18 asks that it be kept for ten years",
	"records/technical_documentation",
	sprintf("add records.technical_documentation: {location: <document system or archive>, jurisdiction: <where it is kept>, retention_years: %d or more}", [min_doc_years]),
) if {
	_judged("records")
	input.records.technical_documentation == null
}

deny contains lib.finding(
	"DOC-001", "deny",
	sprintf("the technical documentation at %s is kept %d year(s), fewer than the minimum %d (AI Act Art. 18)", [doc.location, doc.retention_years, min_doc_years]),
	"records/technical_documentation",
	sprintf("set records.technical_documentation.retention_years to %d or more", [min_doc_years]),
) if {
	doc := input.records.technical_documentation
	doc != null
	doc.retention_years < min_doc_years
}

# GEN-001 (Korea): every deployment of a generative model declares how its output is labelled as AI-generated.
deny contains lib.finding(
	"GEN-001", "deny",
	sprintf("deployment %s serves the generative model %s with no generated-output labelling declared (Korea AI Basic Act: transparency of generative AI)", [l.deployment, l.model]),
	lib.res("deployments", l.deployment),
	sprintf("declare records.generated_output_labelling for the site (or output_labelling on deployment %s or its serving group): {methods: [user-notice, visible-label, machine-readable], reference: <where it is implemented>}; if the model generates nothing (embeddings, classification), set generative: false on model %s", [l.deployment, l.model]),
) if {
	_korea
	some l in input.output_labelling
	l.generative == true
	l.declared_on == null
}

# GEN-002 (Korea): an operator without an address or place of business in Korea records its domestic representative.
deny contains lib.finding(
	"GEN-002", "deny",
	sprintf("the operator of site %s has no address or place of business in Korea (records.operator_domestic_address: false) and records no domestic representative (Korea AI Basic Act)", [input.site.name]),
	"records/domestic_representative",
	"add records.domestic_representative: {name: <the designated representative in Korea>, contact: <its address, e-mail or phone>}",
) if {
	_korea
	input.records.operator_domestic_address == false
	input.records.domestic_representative == null
}
