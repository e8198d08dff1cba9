"""`sovkit validate`, `schema`, `inventory show`, `inventory export`, `--json`, `--version`, usage errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import sovkit
from sovkit.catalog import load_catalog
from sovkit.inventory import load_inventory
from tests.conftest import INVENTORIES, CliResult, run_cli

EXAMPLES = ["demo", "kr-telco", "eu-sovereign"]
Cli = Callable[..., CliResult]


def copy_demo(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    shutil.copytree(INVENTORIES / "demo", root, ignore=shutil.ignore_patterns("generate.py", "*.in", ".sovkit",
                                                                              "hosts"))
    return root


def edit(root: Path, old: str, new: str) -> Path:
    f = root / "site.yaml"
    text = f.read_text()
    assert old in text
    f.write_text(text.replace(old, new, 1))
    return f


# --- validate ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_validate_examples(name: str, cli: Cli) -> None:
    loaded = load_inventory(INVENTORIES / name)
    result = cli("validate", INVENTORIES / name)
    assert result.code == 0, result.text
    site = loaded.site
    assert f"{site.metadata.name}: inventory is valid" in result.out
    assert f"{len(site.hosts)} hosts" in result.out
    assert f"sha256:{loaded.digest}" in result.out
    assert result.err == ""


@pytest.mark.parametrize("name", EXAMPLES)
def test_validate_json(name: str, cli: Cli) -> None:
    loaded = load_inventory(INVENTORIES / name)
    result = cli("validate", INVENTORIES / name, "--json")
    assert result.code == 0, result.text
    data = json.loads(result.out)
    assert data == {
        "valid": True, "site": loaded.site.metadata.name, "digest": loaded.digest,
        "files": [str(f) for f in loaded.files],
        "counts": {"racks": len(loaded.site.racks), "hosts": len(loaded.site.hosts),
                   "models": len(loaded.site.models), "deployments": len(loaded.site.deployments)},
    }


def test_validate_json_lists_problems(tmp_path: Path, cli: Cli) -> None:
    """With --json a failing validate prints the problems as JSON on stdout and still exits 1."""
    root = copy_demo(tmp_path)
    f = edit(root, "country: KR", "country: kr")
    f2 = edit(root, "power_budget_w: 3000", "power_budget_w: -1")
    assert f == f2
    result = cli("validate", root, "--json")
    assert result.code == 1
    data = json.loads(result.out)
    assert data["valid"] is False
    by_path = {p["path"]: p for p in data["problems"]}
    assert set(by_path) == {"jurisdiction.country", "racks[0].power_budget_w"}
    text = f.read_text().splitlines()
    for p in data["problems"]:
        assert p["file"] == str(f)
        assert p["line"] >= 1 and p["column"] >= 1
        key = p["path"].rsplit(".", 1)[-1]
        assert key in text[p["line"] - 1]
    assert "did you mean 'KR'" in by_path["jurisdiction.country"]["message"]
    assert "Traceback" not in result.text


def test_digest_ignores_comments_and_layout(tmp_path: Path, cli: Cli) -> None:
    root = copy_demo(tmp_path)
    original = json.loads(cli("validate", root, "--json").out)["digest"]
    f = root / "site.yaml"
    f.write_text("# a new comment\n" + f.read_text().replace("labels: {environment: demo}",
                                                              "labels:\n    environment: demo"))
    assert json.loads(cli("validate", root, "--json").out)["digest"] == original
    edit(root, "location: Lab bench", "location: Lab bench 2")
    assert json.loads(cli("validate", root, "--json").out)["digest"] != original


# --- schema --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    import contextlib
    import io

    from sovkit.cli.main import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["schema"]) == 0
    data: dict[str, Any] = json.loads(buf.getvalue())
    return data


def _as_json(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


def test_schema_is_valid_json_schema(schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["apiVersion"]["const"] == "sovkit.dev/v1"
    assert schema["additionalProperties"] is False
    assert {"metadata", "jurisdiction", "residency"} <= set(schema["required"])


@pytest.mark.parametrize("name", EXAMPLES)
def test_schema_accepts_examples(name: str, schema: dict[str, Any]) -> None:
    """What an editor checks against the schema agrees with sovkit on the valid examples."""
    data = _as_json(yaml.safe_load((INVENTORIES / name / "site.yaml").read_text()))
    jsonschema.Draft202012Validator(schema).validate(data)


@pytest.mark.parametrize(("path", "value", "fragment"), [
    (("hosts", 0, "adress"), "10.0.0.1", "Additional properties"),
    (("racks", 0, "power_budget_w"), "lots", "is not of type 'number'"),
    (("racks", 0, "power_budget_w"), -1, "less than or equal to the minimum"),
    (("deployments", 0, "role"), "prefil", "is not one of"),
    (("models", 0, "files", 0, "sha256"), "ABC", "does not match"),
    (("kind",), "Cluster", "was expected"),
])
def test_schema_rejects_what_sovkit_rejects(path: tuple[Any, ...], value: Any, fragment: str,
                                            schema: dict[str, Any]) -> None:
    data = _as_json(yaml.safe_load((INVENTORIES / "demo" / "site.yaml").read_text()))
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]
    assert any(fragment in e for e in errors), errors


def test_schema_json_flag_and_subprocess(schema: dict[str, Any], cli: Cli) -> None:
    result = cli("schema", "--json")
    assert result.code == 0
    assert json.loads(result.out) == schema
    proc = run_cli("schema")
    assert proc.code == 0 and json.loads(proc.out) == schema


def test_schema_documents_fields(schema: dict[str, Any]) -> None:
    host = schema["$defs"]["Host"]["properties"]
    assert "Install prefix" in host["root"]["description"]
    assert set(schema["$defs"]["Host"]["required"]) == {"name", "rack", "address", "arch", "cpu"}


# --- inventory show -----------------------------------------------------------------------------------------


def expected_power(name: str) -> dict[str, float]:
    """Rack power computed here from the catalog, independently of sovkit.inventory.capacity."""
    catalog = load_catalog()
    site = load_inventory(INVENTORIES / name).site
    out = {r.name: 0.0 for r in site.racks}
    for h in site.hosts:
        cpu_w = catalog.cpus[h.cpu].tdp_w.value or 0.0
        out[h.rack] += cpu_w + sum((catalog.accelerators[s.kind].tdp_w.value or 0.0) * s.count
                                   for s in h.accelerators)
    return out


@pytest.mark.parametrize("name", EXAMPLES)
def test_show_json_power_vs_budget(name: str, cli: Cli) -> None:
    result = cli("inventory", "show", INVENTORIES / name, "--json")
    assert result.code == 0, result.text
    data = json.loads(result.out)
    site = load_inventory(INVENTORIES / name).site
    power = expected_power(name)
    assert [r["name"] for r in data["racks"]] == [r.name for r in site.racks]
    for rack, r in zip(site.racks, data["racks"], strict=True):
        assert r["power_w"] == pytest.approx(power[rack.name])
        assert r["budget_w"] == rack.power_budget_w
        assert r["ratio"] == pytest.approx(power[rack.name] / rack.power_budget_w, abs=1e-4)
        assert r["hosts"] == sum(1 for h in site.hosts if h.rack == rack.name)
        assert r["accelerators"] == sum(s.count for h in site.hosts if h.rack == rack.name for s in h.accelerators)
    assert [h["name"] for h in data["hosts"]] == [h.name for h in site.hosts]
    assert sum(h["power_w"] for h in data["hosts"]) == pytest.approx(sum(power.values()))


def test_show_table(cli: Cli) -> None:
    result = cli("inventory", "show", INVENTORIES / "kr-telco")
    assert result.code == 0, result.text
    power = expected_power("kr-telco")
    assert "kr-telco-gasan" in result.out and "air-gapped" in result.out
    for rack, watts in power.items():
        row = next(ln for ln in result.out.splitlines() if rack in ln and " W" in ln)
        assert f"{watts:,.0f} W" in row
        assert "15,000 W" in row
        assert f"{watts / 15000:.0%}" in row
    for host in ("prefill-01", "decode-02"):
        assert host in result.out
    assert "rebellions-rebel-quad" in result.out


def test_show_flags_over_budget_rack(tmp_path: Path, cli: Cli) -> None:
    root = copy_demo(tmp_path)
    edit(root, "power_budget_w: 3000", "power_budget_w: 100")
    data = json.loads(cli("inventory", "show", root, "--json").out)
    assert data["racks"][0]["ratio"] > 1
    result = cli("inventory", "show", root)
    row = next(ln for ln in result.out.splitlines() if "demo-rack" in ln and " W" in ln)
    assert re.search(r"\d{3,}%", row), row


def test_show_prints_user_text_verbatim(tmp_path: Path, cli: Cli) -> None:
    """No emoji codes (:cd:) and no rich markup ([bold]) are interpreted in what the operator wrote."""
    root = copy_demo(tmp_path)
    edit(root, "description: Single-machine demo of a Korean sovereign inference site",
         "description: 'rack :cd: at [bold]Hall 3[/] :smile:'")
    result = cli("inventory", "show", root)
    assert result.code == 0, result.text
    assert "rack :cd: at [bold]Hall 3[/] :smile:" in result.out
    assert "💿" not in result.out and "😄" not in result.out


def test_show_bad_inventory_is_reported(tmp_path: Path, cli: Cli) -> None:
    root = copy_demo(tmp_path)
    f = edit(root, "cpu: arm-neoverse-v2", "cpu: arm-neoverse-v22")
    result = cli("inventory", "show", root)
    assert result.code == 1
    assert f"{f}:" in result.err and "[hosts[0].cpu]" in result.err and "did you mean" in result.err
    assert "Traceback" not in result.text


# --- inventory export ----------------------------------------------------------------------------------------


def ansible_list(path: Path) -> dict[str, Any]:
    ansible_inventory = shutil.which("ansible-inventory")
    assert ansible_inventory, "ansible-inventory (ansible-core) is a test dependency"
    proc = subprocess.run([ansible_inventory, "-i", str(path), "--list"], capture_output=True, text=True,
                          timeout=120, env={"ANSIBLE_INVENTORY_UNPARSED_FAILED": "true", "PATH": "/usr/bin:/bin",
                                            "HOME": str(path.parent), "ANSIBLE_LOCAL_TEMP": str(path.parent / "tmp")})
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def members(listing: dict[str, Any], group: str) -> set[str]:
    return set(listing.get(group, {}).get("hosts", []))


@pytest.mark.parametrize("name", EXAMPLES)
def test_export_ansible_parses_with_ansible_inventory(name: str, tmp_path: Path, cli: Cli) -> None:
    result = cli("inventory", "export", INVENTORIES / name, "--format", "ansible")
    assert result.code == 0, result.text
    out = tmp_path / "hosts.yml"
    out.write_text(result.out)
    listing = ansible_list(out)
    site = load_inventory(INVENTORIES / name).site
    hostvars = listing["_meta"]["hostvars"]
    assert set(hostvars) == {h.name for h in site.hosts}
    for h in site.hosts:
        hv = hostvars[h.name]
        assert hv["sovkit_rack"] == h.rack and hv["sovkit_site"] == site.metadata.name
        if h.connection == "ssh":
            assert hv["ansible_host"] == h.address and hv["ansible_port"] == h.ssh.port
        else:
            assert hv["ansible_connection"] == "local"
        assert h.name in members(listing, "rack_" + h.rack.replace("-", "_").replace(".", "_"))
        for slot in h.accelerators:
            assert h.name in members(listing, "accel_" + slot.kind.replace("-", "_"))
    for dep in site.deployments:
        assert set(dep.hosts) <= members(listing, f"role_{dep.role}")


def test_export_groups_kr_telco(tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "hosts.yml"
    out.write_text(cli("inventory", "export", INVENTORIES / "kr-telco").out)
    listing = ansible_list(out)
    assert members(listing, "rack_gasan_r01") == {"prefill-01", "prefill-02"}
    assert members(listing, "role_decode") == {"decode-01", "decode-02"}
    assert members(listing, "accel_rebellions_rebel_quad") == {"prefill-01", "prefill-02"}
    assert members(listing, "accel_rebellions_atom_max") == {"decode-01", "decode-02"}


def test_export_json_matches_yaml(cli: Cli) -> None:
    as_yaml = yaml.safe_load(cli("inventory", "export", INVENTORIES / "eu-sovereign").out)
    as_json = json.loads(cli("inventory", "export", INVENTORIES / "eu-sovereign", "--json").out)
    assert as_yaml == as_json
    assert set(as_json["all"]["hosts"]) == {h.name for h in load_inventory(INVENTORIES / "eu-sovereign").site.hosts}


def test_export_refuses_colliding_group_names(tmp_path: Path, cli: Cli) -> None:
    root = copy_demo(tmp_path)
    edit(root, "    location: Lab bench\n", "    location: Lab bench\n  - {name: demo_rack, power_budget_w: 10}\n")
    edit(root, "npu-node-2\n    rack: demo-rack", "npu-node-2\n    rack: demo_rack")
    assert cli("validate", root).code == 0
    result = cli("inventory", "export", root)
    assert result.code == 1
    assert "'demo-rack' and 'demo_rack' both become Ansible group 'rack_demo_rack'" in result.err
    assert result.out == ""


def test_export_unknown_format_is_usage_error(cli: Cli) -> None:
    result = cli("inventory", "export", INVENTORIES / "demo", "--format", "xml")
    assert result.code == 2
    assert "unknown format 'xml'" in result.err and "Usage:" in result.err
    assert result.out == ""


# --- version and usage errors ------------------------------------------------------------------------------------


def test_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.code == 0
    assert result.out == f"sovkit {sovkit.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", sovkit.__version__)


@pytest.mark.parametrize(("args", "fragment"), [
    (["validate"], "Missing argument"),
    (["nosuchcmd"], "No such command 'nosuchcmd'"),
    (["validate", "a", "b"], "unexpected extra argument"),
    (["validate", "--bogus", "x"], "No such option: --bogus"),
    (["inventory", "show"], "Missing argument"),
    (["inventory", "frobnicate"], "No such command 'frobnicate'"),
    (["--debug", "validate"], "Missing argument"),
])
def test_usage_errors_exit_2_without_traceback(args: list[str], fragment: str, cli: Cli) -> None:
    result = cli(*args)
    assert result.code == 2, result.text
    assert fragment in result.err
    assert "Usage: sovkit" in result.err
    assert "Traceback" not in result.text and "internal error" not in result.text


def test_usage_error_subprocess(tmp_path: Path) -> None:
    result = run_cli("validate", "--bogus")
    assert result.code == 2
    assert "No such option: --bogus" in result.err and "Traceback" not in result.err


def test_missing_inventory_subprocess(tmp_path: Path) -> None:
    result = run_cli("inventory", "show", tmp_path / "nope.yaml")
    assert result.code == 1
    assert f"{tmp_path / 'nope.yaml'}: file not found" in result.err
    assert "Traceback" not in result.err


def test_help_lists_inventory_commands() -> None:
    result = run_cli("--help")
    assert result.code == 0
    for cmd in ("validate", "schema", "inventory"):
        assert cmd in result.out


@pytest.mark.parametrize("args", [["validate"], ["inventory", "show"]])
def test_ascii_terminal_does_not_crash(args: list[str]) -> None:
    """✓, — and × are replaced on a terminal that cannot encode them, instead of an internal error."""
    result = run_cli(*args, INVENTORIES / "demo", env={"PYTHONIOENCODING": "ascii"})
    assert result.code == 0, result.text
    assert "internal error" not in result.text
    assert "demo" in result.out
