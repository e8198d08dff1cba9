# All rule findings before waivers: the shipped packages plus an operator's own under sovkit.custom.*.
# Arrays, not sets: rego-cpp builds a set in quadratic time (10,000 hosts). Each shipped package yields each
# finding once; a duplicate (e.g. a custom rule repeating a shipped finding) is dropped with the decision's
# findings in sovkit/policy/engine.py.
package sovkit.findings

import rego.v1

import data.sovkit.capacity
import data.sovkit.firmware
import data.sovkit.provenance
import data.sovkit.records
import data.sovkit.residency
import data.sovkit.runtime
import data.sovkit.serving

_custom_deny := [f |
	some name
	some f in data.sovkit.custom[name].deny
]

_custom_warn := [f |
	some name
	some f in data.sovkit.custom[name].warn
]

deny := [f |
	some part in [residency.deny, provenance.deny, firmware.deny, runtime.deny, capacity.deny, serving.deny, records.deny,
		_custom_deny]
	some f in part
]

warn := [f |
	some part in [provenance.warn, firmware.warn, runtime.warn, capacity.warn, serving.warn, _custom_warn]
	some f in part
]
