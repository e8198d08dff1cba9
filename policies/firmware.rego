# Firmware: pinned, from an allowlisted vendor, signed by that vendor's trusted key, never downgraded.
package sovkit.firmware

import rego.v1

import data.sovkit.lib

_vendors := {v | some v in data.sovkit.config.firmware_vendors}

# FW-001: an exact version, never latest, a range or a wildcard.
_deny contains lib.finding(
	"FW-001", "deny",
	sprintf("firmware %s version %s is not pinned", [fw.name, fw.version]),
	lib.res("firmware", fw.name),
	"pin the exact vendor version (e.g. 1.9.2)",
) if {
	some fw in input.firmware
	not lib.pinned_version(fw.version)
}

# FW-002: the vendor is on the firmware vendor allowlist.
_deny contains lib.finding(
	"FW-002", "deny",
	sprintf("firmware %s comes from vendor %s, which is not on the firmware vendor allowlist", [fw.name, fw.vendor]),
	lib.res("firmware", fw.name),
	"use firmware from an approved vendor, or add the vendor to data.sovkit.config.firmware_vendors after review",
) if {
	some fw in input.firmware
	not fw.vendor in _vendors
}

# FW-003: the image carries the vendor's signature.
_deny contains lib.finding(
	"FW-003", "deny",
	sprintf("firmware %s %s has no vendor signature", [fw.name, fw.version]),
	lib.res("firmware", fw.name),
	"obtain the vendor's signature for the image and set firmware[].signature",
) if {
	some fw in input.firmware
	fw.signature.path == null
}

# FW-004: the signature verifies with the vendor's key in the trust roots, over the pinned digest.
_deny contains lib.finding(
	"FW-004", "deny",
	sprintf("firmware %s signature does not verify with vendor %s's trusted key: %s", [fw.name, fw.vendor, fw.signature.reason]),
	lib.res("firmware", fw.name),
	"fetch the approved image and signature again, or check trust_roots.vendors holds the vendor's real key",
) if {
	some fw in input.firmware
	fw.signature.path != null
	fw.signature.checked == true
	fw.signature.verified != true
}

# FW-005: no downgrade below the version recorded on a host (state given).
# Judged once per host shape (input.host_shapes: hosts with identical facts), then named for each of its hosts.
_fw005_deny := [lib.finding(
	"FW-005", "deny",
	sprintf("host %s would downgrade %s firmware from %s to %s", [name, d[0], d[1], d[2]]),
	lib.res("hosts", name),
	"pin a firmware version at least as new as the installed one (a deliberate downgrade needs a waiver)",
) |
	some x in _fw005_found
	d := x[1]
	some r in x[0].racks
	some name in r.hosts
]

# The failing shapes first, then each of their hosts (in one body rego-cpp may walk every host first).
_fw005_found := [[s, d] |
	some s in input.host_shapes
	s.recorded != null
	some d in _fw005(s)
]

# Per shape a small set of [kind, recorded, pinned] (two slots of one kind give one finding).
_fw005(s) := {[slot.kind, recorded, fw.version] |
	some slot in s.accelerators
	some fw in input.firmware
	fw.name == slot.firmware
	recorded := s.recorded.firmware[slot.kind]
	_keys[fw.version] < lib.version_key(recorded) # lib.older, the pinned side's key computed once
}

# The ordering key of each pinned firmware version (lib.version_key), once: rego-cpp caches no function results,
# and the downgrade check runs once per host shape (one per host when every host has its own recorded versions).
_keys := {v: lib.version_key(v) | some fw in input.firmware; v := fw.version}

# FW-006: the signature could not be checked here (OCI registry store: checked at apply, after the pull).
_warn contains lib.finding(
	"FW-006", "warn",
	sprintf("firmware %s signature was not checked: %s", [fw.name, fw.signature.reason]),
	lib.res("firmware", fw.name),
	"it is verified at apply time; to check it now, import the artifacts into a local store",
) if {
	some fw in input.firmware
	fw.signature.path != null
	fw.signature.checked != true
}

# Rules over per-host collections build arrays: rego-cpp builds a set in quadratic time.
deny := [f |
	some part in [[f | some f in _deny], _fw005_deny]
	some f in part
]

warn := [f | some f in _warn]
