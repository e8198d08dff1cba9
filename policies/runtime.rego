# Runtimes (serving stacks): pinned, from an allowlisted vendor, signed, never downgraded.
package sovkit.runtime

import rego.v1

import data.sovkit.lib

_vendors := {v | some v in data.sovkit.config.runtime_vendors}

# RT-001: an exact version.
_deny contains lib.finding(
	"RT-001", "deny",
	sprintf("runtime %s version %s is not pinned", [rt.name, rt.version]),
	lib.res("runtimes", rt.name),
	"pin the exact runtime version (e.g. 0.9.2)",
) if {
	some rt in input.runtimes
	not lib.pinned_version(rt.version)
}

# RT-002: the runtime names a vendor on the runtime vendor allowlist.
_deny contains lib.finding(
	"RT-002", "deny",
	sprintf("runtime %s declares no vendor", [rt.name]),
	lib.res("runtimes", rt.name),
	"set runtimes[].vendor to the vendor whose key signs the runtime",
) if {
	some rt in input.runtimes
	rt.vendor == null
}

_deny contains lib.finding(
	"RT-002", "deny",
	sprintf("runtime %s comes from vendor %s, which is not on the runtime vendor allowlist", [rt.name, rt.vendor]),
	lib.res("runtimes", rt.name),
	"use an approved runtime, or add the vendor to data.sovkit.config.runtime_vendors after review",
) if {
	some rt in input.runtimes
	rt.vendor != null
	not rt.vendor in _vendors
}

# RT-003: the runtime carries the vendor's signature.
_deny contains lib.finding(
	"RT-003", "deny",
	sprintf("runtime %s %s has no vendor signature", [rt.name, rt.version]),
	lib.res("runtimes", rt.name),
	"obtain the vendor's signature over the runtime artifacts and set runtimes[].signature",
) if {
	some rt in input.runtimes
	rt.signature.path == null
}

# RT-004: the signature verifies with the vendor's trusted key, over the pinned digests.
_deny contains lib.finding(
	"RT-004", "deny",
	sprintf("runtime %s signature does not verify with vendor %s's trusted key: %s", [rt.name, rt.vendor, rt.signature.reason]),
	lib.res("runtimes", rt.name),
	"fetch the approved artifacts and signature again, or check trust_roots.vendors",
) if {
	some rt in input.runtimes
	rt.signature.path != null
	rt.signature.checked == true
	rt.signature.verified != true
}

# RT-005: no downgrade below the version recorded on a host that runs it (state given).
_rt005_deny := [lib.finding(
	"RT-005", "deny",
	sprintf("host %s would downgrade runtime %s from %s to %s", [host, p.runtime, p.recorded_runtime, p.runtime_version]),
	lib.res("hosts", host),
	"pin a runtime version at least as new as the installed one (a deliberate downgrade needs a waiver)",
) |
	some p in _rt005
	some host in p.hosts
]

# The failing shapes first, then each of their hosts (in one body rego-cpp may walk every host first).
_rt005 := [p |
	some p in input.placement_shapes
	p.recorded_runtime != null
	p.runtime_version != null
	_keys[p.runtime_version] < lib.version_key(p.recorded_runtime) # lib.older, the pinned side's key once
]

# The ordering key of each pinned runtime version (lib.version_key), once: rego-cpp caches no function results,
# and the downgrade check runs once per placement shape (one per placement when every host has its own versions).
_keys := {v: lib.version_key(v) | some p in input.placement_shapes; v := p.runtime_version; v != null}

# RT-006: the signature could not be checked here (OCI registry store: checked at apply, after the pull).
_warn contains lib.finding(
	"RT-006", "warn",
	sprintf("runtime %s signature was not checked: %s", [rt.name, rt.signature.reason]),
	lib.res("runtimes", rt.name),
	"it is verified at apply time; to check it now, import the artifacts into a local store",
) if {
	some rt in input.runtimes
	rt.signature.path != null
	rt.signature.checked != true
}

# Rules over per-host collections build arrays: rego-cpp builds a set in quadratic time.
deny := [f |
	some part in [[f | some f in _deny], _rt005_deny]
	some f in part
]

warn := [f | some f in _warn]
