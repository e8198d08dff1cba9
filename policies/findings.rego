# All rule findings before waivers: the shipped packages plus an operator's own under sovkit.custom.*.
package sovkit.findings

import rego.v1

deny contains f if some f in data.sovkit.residency.deny

deny contains f if some f in data.sovkit.provenance.deny

deny contains f if some f in data.sovkit.firmware.deny

deny contains f if some f in data.sovkit.runtime.deny

deny contains f if some f in data.sovkit.capacity.deny

deny contains f if some f in data.sovkit.serving.deny

deny contains f if some f in data.sovkit.records.deny

deny contains f if {
	some name
	some f in data.sovkit.custom[name].deny
}

warn contains f if some f in data.sovkit.residency.warn

warn contains f if some f in data.sovkit.provenance.warn

warn contains f if some f in data.sovkit.firmware.warn

warn contains f if some f in data.sovkit.runtime.warn

warn contains f if some f in data.sovkit.capacity.warn

warn contains f if some f in data.sovkit.serving.warn

warn contains f if {
	some name
	some f in data.sovkit.custom[name].warn
}
