# Shared helpers for the sovkit pack: the finding shape, jurisdictions, versions.
package sovkit.lib

import rego.v1

# Every rule yields this object (Conftest-style), so engines and reports read one shape.
finding(id, severity, msg, resource, remediation) := {
	"id": id,
	"severity": severity,
	"msg": msg,
	"resource": resource,
	"remediation": remediation,
}

# Is jurisdiction j (a country "KR" or subdivision "KR-11") inside area a?
within(j, a) if j == a

within(j, a) if startswith(j, concat("", [a, "-"]))

# j lies in one of the site's allowed jurisdictions.
allowed_jurisdiction(j) if {
	some a in input.residency.allowed_jurisdictions
	within(j, a)
}

# The ISO 3166-1 country of a jurisdiction code.
country(j) := split(j, "-")[0]

# The host part of a URL such as https://mirror.example.de:443/path.
url_host(url) := host if {
	contains(url, "://")
	rest := split(url, "://")[1]
	authority := split(rest, "/")[0]
	host := split(authority, ":")[0]
}

url_host(url) := split(split(url, "/")[0], ":")[0] if not contains(url, "://")

# Pinned: an exact version such as 1.2.0, 2025.3.0, 96.00.99.00.01 or 1.0.0-rc1+b5.
# Not pinned: latest, stable, ranges (>=1.2, ~1.2, ^1, 1.2 - 1.4), wildcards (1.x, 1.*).
pinned_version(v) if regex.match(`^v?[0-9]+(\.[0-9]+)*([-+][0-9A-Za-z.]+)?$`, v)

_zeros := "00000000000000000000"

_pad(part) := concat("", [substring(_zeros, 0, 20 - count(t)), t]) if {
	t := trim_left(part, "0")
	count(t) <= 20
}

# A string key that orders dotted versions numerically (1.10.0 > 1.9.9).
version_key(v) := concat(".", [_pad(p) | some p in split(trim_left(v, "v"), ".")])

# Version a is older than version b.
older(a, b) if version_key(a) < version_key(b)

# A resource name as findings and waivers spell it: "<section>/<name>".
res(section, name) := concat("/", [section, name])
