"""Every verb takes `--json` (the README's promise), and each shape added for it is parsed and checked here."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main

from sovkit.bundle.manifest import Manifest
from sovkit.cli.main import app
from sovkit.policy.api import policy_pack_digest
from sovkit.signing.keys import PublicKey
from sovkit.state.store import LocalStateStore
from tests.bundlekit import demo_copy, make_bundle
from tests.conftest import INVENTORIES, CliResult

DEMO = INVENTORIES / "demo"
Cli = Callable[..., CliResult]


def _verbs(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every leaf command of the app (groups are walked, not reported); typer may vendor its own click."""
    subs: dict[str, Any] | None = getattr(command, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _verbs(sub, (*path, name))
    else:
        yield " ".join(path), command


def _without_json(typer_app: typer.Typer) -> list[str]:
    return [name for name, cmd in _verbs(typer.main.get_command(typer_app))
            if not any("--json" in getattr(p, "opts", ()) for p in cmd.params)]


def test_every_registered_verb_accepts_json() -> None:
    verbs = [name for name, _ in _verbs(typer.main.get_command(app))]
    assert {"keys id", "policy bundle", "bundle split", "force-unlock", "demo", "policy input"} <= set(verbs)
    assert _without_json(app) == []


def test_the_walk_finds_a_verb_without_json() -> None:
    """The check above is not vacuous: a new verb without --json is reported (here on a throwaway app)."""
    toy = typer.Typer()
    sub = typer.Typer()

    @sub.command("new-verb")
    def new_verb(x: int = 1) -> None: ...

    @sub.command("other")
    def other(json_out: bool = typer.Option(False, "--json")) -> None: ...

    toy.add_typer(sub, name="grp")
    assert _without_json(toy) == ["grp new-verb"]


def test_keys_id_and_generate_json(cli: Cli, tmp_path: Path) -> None:
    made = cli("keys", "generate", "-o", tmp_path / "op.key", "--insecure-no-passphrase", "--json")
    assert made.code == 0, made.text
    gen = json.loads(made.out)
    assert gen == {"private_key": str(tmp_path / "op.key"), "public_key": str(tmp_path / "op.key.pub"),
                   "keyid": PublicKey.load(tmp_path / "op.key.pub").keyid, "algorithm": "ed25519",
                   "encrypted": False}
    r = cli("keys", "id", DEMO / "keys" / "publisher.pub", "--json")
    assert r.code == 0, r.text
    info = json.loads(r.out)
    assert info == {"path": str(DEMO / "keys" / "publisher.pub"),
                    "keyid": PublicKey.load(DEMO / "keys" / "publisher.pub").keyid,
                    "keytype": PublicKey.load(DEMO / "keys" / "publisher.pub").keytype,
                    "scheme": PublicKey.load(DEMO / "keys" / "publisher.pub").scheme}
    assert cli("keys", "id", DEMO / "keys" / "publisher.pub").out.strip() == info["keyid"]


def test_policy_bundle_input_schema_json(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "pack.tar.gz"
    r = cli("policy", "bundle", "-o", out, "--json")
    assert r.code == 0, r.text
    assert json.loads(r.out) == {"path": str(out), "pack_digest": policy_pack_digest(None), "signed_by": None}
    assert out.is_file()
    plain = cli("policy", "input", DEMO, "--state-dir", tmp_path / "s")
    with_json = cli("policy", "input", DEMO, "--state-dir", tmp_path / "s", "--json")
    assert with_json.code == 0 and json.loads(with_json.out) == json.loads(plain.out)
    assert json.loads(with_json.out)["apiVersion"] == "sovkit.dev/policy-input/v2"
    assert json.loads(cli("policy", "schema", "--json").out) == json.loads(cli("policy", "schema").out)


def test_policy_test_json(cli: Cli) -> None:
    r = cli("policy", "test", "--json")
    assert r.code == 0, r.text
    results = json.loads(r.out)
    assert results and all(set(t) == {"file", "package", "name", "passed", "error"} for t in results)
    assert all(t["passed"] is True and t["error"] is None for t in results)


def test_bundle_split_and_join_json(cli: Cli, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    make_bundle(demo_copy(tmp_path), bundle)
    manifest_sha = Manifest.model_validate_json((bundle / "manifest.json").read_bytes()).digest()
    r = cli("bundle", "split", bundle, "-o", tmp_path / "parts", "--size", "1M", "--json")
    assert r.code == 0, r.text
    split = json.loads(r.out)
    assert split["out"] == str(tmp_path / "parts")
    assert split["index"]["manifest_sha256"] == manifest_sha and split["index"]["part_size"] == 1 << 20
    written = sorted(p.name for p in (tmp_path / "parts").glob("part-*.svb"))
    assert [p["name"] for p in split["index"]["parts"]] == written and len(written) >= 1
    assert "━" not in r.out  # no progress bar in JSON mode
    j = cli("bundle", "join", tmp_path / "parts", "-o", tmp_path / "joined", "--json")
    assert j.code == 0, j.text
    joined = json.loads(j.out)
    assert joined["out"] == str(tmp_path / "joined") and joined["written"] > 0
    assert joined["reused"] == 0 and joined["pending"] == []


def test_force_unlock_json(cli: Cli, tmp_path: Path) -> None:
    state = tmp_path / "state"
    crashed = LocalStateStore(state).lock("apply")  # a run that died holding the lock (never exits it)
    held = crashed.__enter__()
    r = cli("force-unlock", held.id, DEMO, "--state-dir", state, "--json")
    assert r.code == 0, r.text
    assert json.loads(r.out) == held.model_dump(mode="json")
    assert not (state / "state.lock").exists()
    del crashed


@pytest.mark.parametrize("verb", ["keys id", "policy bundle", "bundle split", "force-unlock", "demo"])
def test_help_mentions_json(cli: Cli, verb: str) -> None:
    r = cli(*verb.split(), "--help")
    assert r.code == 0 and "--json" in r.out
