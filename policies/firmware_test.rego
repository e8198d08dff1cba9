package sovkit.firmware_test

import rego.v1

import data.sovkit.firmware

_sig := {"path": "fw.sig", "format": "dsse", "signer": "rebellions", "checked": true, "verified": true, "keyid": "k", "reason": "ok"}

_fw := {
	"name": "fw", "vendor": "rebellions", "accelerator": "rebellions-atom-max", "version": "1.3.0",
	"image": {"path": "fw.bin", "sha256": "428708d93ee7d9f373551b952fa7334324c76e40b438ac9eb250d00ab5021699", "size": 1, "stored_size": 1},
	"signature": _sig,
}

_hosts := [{"racks": [{"name": "r", "hosts": ["h"]}], "accelerators": [{"kind": "rebellions-atom-max", "count": 2, "firmware": "fw"}]}]

_ids(fs) := {f.id | some f in fs}

_with(patch) := [object.union(_fw, patch)]

test_good_firmware_passes if {
	fws := [_fw]
	count(firmware.deny) == 0 with input.firmware as fws
	count(firmware.warn) == 0 with input.firmware as fws
}

test_fw_001_latest if {
	fws := _with({"version": "latest"})
	_ids(firmware.deny) == {"FW-001"} with input.firmware as fws
}

test_fw_001_ranges_and_wildcards if {
	every v in [">=1.2", "~1.2", "^1.2.0", "1.x", "1.2.*", "1.2 - 1.4", "1.2,1.3"] {
		fws := _with({"version": v})
		_ids(firmware.deny) == {"FW-001"} with input.firmware as fws
	}
}

test_fw_001_exact_versions_pass if {
	every v in ["1.2.0", "2025.3.0", "96.00.99.00.01", "1.0.0-rc1", "v2.1.3+b5"] {
		fws := _with({"version": v})
		count(firmware.deny) == 0 with input.firmware as fws
	}
}

test_fw_002_vendor_not_allowlisted if {
	fws := _with({"vendor": "acme"})
	_ids(firmware.deny) == {"FW-002"} with input.firmware as fws
}

test_fw_003_unsigned if {
	fws := _with({"signature": object.union(_sig, {"path": null, "checked": false, "verified": false})})
	_ids(firmware.deny) == {"FW-003"} with input.firmware as fws
}

test_fw_004_signature_does_not_verify if {
	fws := _with({"signature": object.union(_sig, {"verified": false, "reason": "bad"})})
	_ids(firmware.deny) == {"FW-004"} with input.firmware as fws
}

test_fw_005_downgrade_against_state if {
	fws := [_fw]
	hs := [object.union(_hosts[0], {"recorded": {"firmware": {"rebellions-atom-max": "1.10.0"}, "runtimes": {}, "models": {}}})]
	d := firmware.deny with input.firmware as fws with input.host_shapes as hs
	_ids(d) == {"FW-005"}
	some f in d
	f.resource == "hosts/h"
}

test_fw_005_names_each_host_of_a_shape if {
	fws := [_fw]
	recorded := {"recorded": {"firmware": {"rebellions-atom-max": "1.10.0"}, "runtimes": {}, "models": {}}}
	hs := [object.union(_hosts[0], object.union(recorded, {"racks": [{"name": "r", "hosts": ["h"]}, {"name": "s", "hosts": ["g"]}]}))]
	d := firmware.deny with input.firmware as fws with input.host_shapes as hs
	{f.resource | some f in d} == {"hosts/h", "hosts/g"}
	count(d) == 2
}

test_fw_005_upgrade_and_same_pass if {
	fws := [_fw]
	hs := _hosts
	every recorded in ["1.2.0", "1.3.0", "1.2.10"] {
		hr := [object.union(hs[0], {"recorded": {"firmware": {"rebellions-atom-max": recorded}, "runtimes": {}, "models": {}}})]
		count(firmware.deny) == 0 with input.firmware as fws with input.host_shapes as hr
	}
}

test_fw_005_no_state_passes if {
	fws := [_fw]
	hs := _hosts
	count(firmware.deny) == 0 with input.firmware as fws with input.host_shapes as hs
}

test_fw_006_unchecked_warns if {
	fws := _with({"signature": object.union(_sig, {"checked": false, "verified": false, "reason": "mirror"})})
	count(firmware.deny) == 0 with input.firmware as fws
	_ids(firmware.warn) == {"FW-006"} with input.firmware as fws
}
