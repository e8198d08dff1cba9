# Residency: where data, weights, logs and telemetry may live, and what may leave the site.
package sovkit.residency

import rego.v1

import data.sovkit.lib

_site := lib.res("site", input.site.name)

_sections := {
	"data_stores": ["RES-001", "data store"],
	"backups": ["RES-002", "backup target"],
	"telemetry": ["RES-003", "telemetry sink"],
	"log_sinks": ["RES-004", "log sink"],
	"model_registries": ["RES-005", "model registry"],
	"endpoints": ["RES-006", "endpoint"],
}

# RES-001..RES-006: every place data, weights, logs or telemetry go lies in an allowed jurisdiction.
_deny contains lib.finding(
	spec[0], "deny",
	sprintf("%s %s is in %s, outside the allowed jurisdictions %v", [spec[1], item.name, item.jurisdiction, input.residency.allowed_jurisdictions]),
	lib.res(section, item.name),
	sprintf("move the %s into %v, or add its jurisdiction to residency.allowed_jurisdictions if the law allows it", [spec[1], input.residency.allowed_jurisdictions]),
) if {
	some section, spec in _sections
	some item in input[section]
	not lib.allowed_jurisdiction(item.jurisdiction)
}

# RES-007: the site's artifact registry (kind oci) holds the weights, so it must be in an allowed jurisdiction too.
_deny contains lib.finding(
	"RES-007", "deny",
	sprintf("artifact registry %s is in %s, outside the allowed jurisdictions", [input.artifact_store.url, input.artifact_store.jurisdiction]),
	"artifact_store/oci",
	"use a registry inside the allowed jurisdictions (fill it with `sovkit bundle import --registry`)",
) if {
	input.artifact_store.kind == "oci"
	not lib.allowed_jurisdiction(input.artifact_store.jurisdiction)
}

# RES-008: the site itself (where every host is) lies in an allowed jurisdiction.
_deny contains lib.finding(
	"RES-008", "deny",
	sprintf("the site is in %s, outside its own allowed jurisdictions %v", [input.site.location, input.residency.allowed_jurisdictions]),
	_site,
	"correct jurisdiction or residency.allowed_jurisdictions",
) if {
	input.site.location
	not lib.allowed_jurisdiction(input.site.location)
}

# RES-009: a host labelled with its own jurisdiction must lie in the site's country.
_res009_deny := [lib.finding(
	"RES-009", "deny",
	sprintf("host %s is labelled as located in %s, but the site is in %s", [name, s.jurisdiction, input.site.jurisdiction.country]),
	lib.res("hosts", name),
	"hosts of a site lie in the site's jurisdiction: move the host to its own site inventory, or fix its label",
) |
	some s in _res009
	some r in s.racks
	some name in r.hosts
]

# The failing host shapes first, then each of their hosts (in one body rego-cpp may walk every host first).
_res009 := [s | some s in input.host_shapes; lib.country(s.jurisdiction) != input.site.jurisdiction.country]

# RES-010: an air-gapped site has no egress at all.
_deny contains lib.finding(
	"RES-010", "deny",
	sprintf("endpoint %s (%s) is egress, but the site is air-gapped", [e.name, e.url]),
	lib.res("endpoints", e.name),
	"remove the egress endpoint, or set residency.air_gapped: false and list it in allowed_egress",
) if {
	input.residency.air_gapped == true
	some e in input.endpoints
	e.direction == "egress"
}

_deny contains lib.finding(
	"RES-010", "deny",
	sprintf("the site is air-gapped but residency.allowed_egress lists %v", [input.residency.allowed_egress]),
	_site,
	"an air-gapped site allows no egress: empty allowed_egress or set air_gapped: false",
) if {
	input.residency.air_gapped == true
	count(input.residency.allowed_egress) > 0
}

# RES-011: egress only to destinations the operator allowed.
_deny contains lib.finding(
	"RES-011", "deny",
	concat("", ["egress endpoint ", e.name, " goes to ", lib.url_host(e.url), ", which is not in residency.allowed_egress"]),
	lib.res("endpoints", e.name),
	"add the host to residency.allowed_egress (after review) or remove the endpoint",
) if {
	not input.residency.air_gapped
	some e in input.endpoints
	e.direction == "egress"
	not lib.url_host(e.url) in {x | some x in input.residency.allowed_egress}
}

# RES-012: personal data leaving the site's country needs a recorded legal basis (GDPR Arts. 44-46, PIPA Art. 28-8).
_personal contains [section, item.name, item.jurisdiction] if {
	some section in ["data_stores", "endpoints"]
	some item in input[section]
	item.personal_data == true
}

_personal contains ["backups", b.name, b.jurisdiction] if {
	some b in input.backups
	some s in input.data_stores
	s.name == b.source
	s.personal_data == true
}

_transfer_basis(j) if {
	some t in input.residency.transfers
	lib.within(j, t.destination)
}

_deny contains lib.finding(
	"RES-012", "deny",
	sprintf("personal data in %s/%s goes to %s, outside %s, with no recorded legal basis", [p[0], p[1], p[2], input.site.jurisdiction.country]),
	lib.res(p[0], p[1]),
	sprintf("record the transfer under residency.transfers (destination %s, basis adequacy/scc/bcr/consent/derogation, reference)", [p[2]]),
) if {
	some p in _personal
	lib.country(p[2]) != input.site.jurisdiction.country
	not _transfer_basis(p[2])
}

# Rules over per-host collections build arrays: rego-cpp builds a set in quadratic time.
deny := [f |
	some part in [[f | some f in _deny], _res009_deny]
	some f in part
]
