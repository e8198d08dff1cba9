# Provenance: which models may run — pinned, signed by a trusted publisher, licensed, with declared lineage.
package sovkit.provenance

import rego.v1

import data.sovkit.lib

_licenses := {l | some l in data.sovkit.config.licenses}

# PRV-001: the model version and every file digest are pinned.
model_deny contains lib.finding(
	"PRV-001", "deny",
	sprintf("model %s version %s is not pinned", [m.name, m.version]),
	lib.res("models", m.name),
	"pin an exact version (e.g. 1.0 or 24b-2503), never latest or a range",
) if {
	some m in input.models
	not regex.match(`^[0-9A-Za-z][0-9A-Za-z._+-]*$`, m.version)
}

model_deny contains lib.finding(
	"PRV-001", "deny",
	sprintf("model %s version %s is not pinned", [m.name, m.version]),
	lib.res("models", m.name),
	"pin an exact version (e.g. 1.0 or 24b-2503), never latest or a range",
) if {
	some m in input.models
	lower(m.version) in {"latest", "stable", "main", "head", "current"}
}

model_deny contains lib.finding(
	"PRV-001", "deny",
	sprintf("model %s file %s has no pinned sha256 digest", [m.name, f.path]),
	lib.res("models", m.name),
	"pin the sha256 of every model file (sovkit bundle create lists them)",
) if {
	some m in input.models
	some f in m.files
	not regex.match(`^[0-9a-f]{64}$`, object.get(f, "sha256", ""))
}

# PRV-002: the model carries a publisher signature.
model_deny contains lib.finding(
	"PRV-002", "deny",
	sprintf("model %s %s has no publisher signature", [m.name, m.version]),
	lib.res("models", m.name),
	"obtain the publisher's signature over the model files and set models[].signature",
) if {
	some m in input.models
	m.signature.path == null
}

# PRV-003: the signature verifies against the publisher key in the trust roots, over the pinned digests.
model_deny contains lib.finding(
	"PRV-003", "deny",
	sprintf("model %s signature does not verify with publisher %s's trusted key: %s", [m.name, m.publisher, m.signature.reason]),
	lib.res("models", m.name),
	"fetch the approved files and signature again, or check trust_roots.publishers holds the publisher's real key",
) if {
	some m in input.models
	m.signature.path != null
	m.signature.checked == true
	m.signature.verified != true
}

# PRV-004: the model's licence, and each base model's, is on the allowlist.
model_deny contains lib.finding(
	"PRV-004", "deny",
	sprintf("model %s licence %s is not on the licence allowlist", [m.name, m.license]),
	lib.res("models", m.name),
	"use an approved model, or add the licence to data.sovkit.config.licenses after legal review",
) if {
	some m in input.models
	not lower(m.license) in _licenses
}

model_deny contains lib.finding(
	"PRV-004", "deny",
	sprintf("base model %s of %s has licence %s, not on the licence allowlist", [b.name, m.name, b.license]),
	lib.res("models", m.name),
	"use an approved base model, or add the licence to data.sovkit.config.licenses after legal review",
) if {
	some m in input.models
	some b in m.base_models
	not lower(b.license) in _licenses
}

# PRV-005: purpose, training data and lineage are declared (model card; EU AI Act Annex IV).
model_deny contains lib.finding(
	"PRV-005", "deny",
	sprintf("model %s has no model card (purpose, datasets, limitations undeclared)", [m.name]),
	lib.res("models", m.name),
	"add models[].card with purpose, datasets and limitations",
) if {
	some m in input.models
	object.get(m, "card", null) == null
}

_deny contains f if some f in model_deny

# PRV-006: the signature could not be checked here (OCI registry store, or a format verified at apply time).
_warn contains lib.finding(
	"PRV-006", "warn",
	sprintf("model %s signature was not checked: %s", [m.name, m.signature.reason]),
	lib.res("models", m.name),
	"it is verified at apply time; to check it now, import the artifacts into a local store",
) if {
	some m in input.models
	m.signature.path != null
	m.signature.checked != true
}

# PRV-007: only models that pass provenance may be deployed.
# The ids failing each model, by its resource: computed once, not once per deployment.
_failing_models := {f.resource | some f in model_deny}

_failing_ids := {r: sort({f.id | some f in model_deny; f.resource == r}) | some r in _failing_models}

_prv007_deny := [lib.finding(
	"PRV-007", "deny",
	concat("", ["deployment ", d.name, " uses model ", d.model, ", which fails ", concat(", ", ids)]),
	lib.res("deployments", d.name),
	"fix the model's provenance findings (or deploy an approved model)",
) |
	some d in input.deployments
	ids := _failing_ids[lib.res("models", d.model)]
]

# PRV-008: a base model from outside the allowed jurisdictions is visible to reviewers.
_warn contains lib.finding(
	"PRV-008", "warn",
	sprintf("model %s derives from %s (%s), from %s outside the allowed jurisdictions", [m.name, b.name, b.publisher, b.origin]),
	lib.res("models", m.name),
	"record the review of the foreign base model (or waive PRV-008 for this model with the review reference)",
) if {
	some m in input.models
	some b in m.base_models
	not lib.allowed_jurisdiction(b.origin)
}

# Rules over per-host collections build arrays: rego-cpp builds a set in quadratic time.
deny := [f |
	some part in [[f | some f in _deny], _prv007_deny]
	some f in part
]

warn := [f | some f in _warn]
