"""Fleet pieces without a lab: the fleet file, the SSH command line, the signed summary's checks, the agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sovkit.errors import FleetError
from sovkit.fleet.models import load_fleet
from sovkit.fleet.runner import agent_args, ssh_worker_argv
from sovkit.fleet.summary import SiteSummary, sign_summary, verify_summary
from sovkit.plan.rollout import Rollout
from sovkit.signing.keys import LocalSigner
from tests.conftest import run_cli
from tests.sitefactory import make_site

SITE_KEY = LocalSigner.from_seed(b"site-a key")
OTHER_KEY = LocalSigner.from_seed(b"another site's key")


def _fleet(tmp: Path, gateway: dict[str, object] | None = None, **site: object) -> Path:
    for name in ("a.pub", "gw", "kh"):
        (tmp / name).write_text("x")
    entry = {"name": "site-a", "inventory": "/srv/a/site.yaml", "key": "a.pub",
             "gateway": {"address": "10.0.0.5", "ssh_key": "gw", "known_hosts": "kh", **(gateway or {})}, **site}
    path = tmp / "fleet.yaml"
    path.write_text(json.dumps({"apiVersion": "sovkit.dev/v1", "kind": "Fleet", "metadata": {"name": "f"},
                                "sites": [entry]}))
    return path


@pytest.mark.parametrize(("gateway", "site", "field"), [
    ({"address": "gw; rm -rf /"}, {}, "sites.0.gateway.address"),
    ({"address": "-oProxyCommand=x"}, {}, "sites.0.gateway.address"),
    ({"user": "root$(id)"}, {}, "sites.0.gateway.user"),
    ({"python": "/usr/bin/python3 -c 'import os'"}, {}, "sites.0.gateway.python"),
    ({}, {"inventory": "/srv/../etc/passwd"}, "sites.0.inventory"),
    ({}, {"signing_key": "{{ lookup('pipe', 'id') }}"}, "sites.0.signing_key"),
    ({}, {"name": "Site A"}, "sites.0.name"),
    ({}, {"colour": "red"}, "sites.0.colour"),
])
def test_hostile_or_wrong_values_are_refused_with_their_field(tmp_path: Path, gateway: dict[str, object],
                                                             site: dict[str, object], field: str) -> None:
    with pytest.raises(FleetError) as err:
        load_fleet(_fleet(tmp_path, gateway, **site))
    assert field in err.value.message and str(tmp_path / "fleet.yaml") in err.value.message


def test_cli_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text("apiVersion: sovkit.dev/v1\nkind: Fleet\nmetadata: {name: f}\nsites:\n"
                   "  - name: a\n    inventory: /srv/a/site.yaml\n    key: a.pub\n"
                   "    gateway: {address: 'gw; rm -rf /', ssh_key: k, known_hosts: kh}\n")
    r = run_cli("fleet", "plan", bad)
    assert r.code == 1 and f"{bad}:8" in r.err and "sites.0.gateway.address" in r.err, r.text
    assert "Traceback" not in r.err


def test_missing_controller_files_are_named(tmp_path: Path) -> None:
    path = _fleet(tmp_path)
    (tmp_path / "kh").unlink()
    with pytest.raises(FleetError, match=r"gateway\.known_hosts kh not found"):
        load_fleet(path)


def test_ssh_command_is_strict_and_quoted(tmp_path: Path) -> None:
    loaded = load_fleet(_fleet(tmp_path, {"python": "/opt/sovkit_env/bin/python3", "port": 2222}))
    argv = ssh_worker_argv(loaded, loaded.fleet.sites[0])
    assert argv[:2] == ["ssh", "-o"] and "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert f"UserKnownHostsFile={tmp_path / 'kh'}" in argv and argv[argv.index("-i") + 1] == str(tmp_path / "gw")
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("--") - 1] == "10.0.0.5"
    assert argv[-1] == "PATH=/opt/sovkit_env/bin:/usr/local/bin:/usr/bin:/bin /opt/sovkit_env/bin/python3 " \
                       "-m ansible_runner worker"


def test_agent_args_carry_the_rollout(tmp_path: Path) -> None:
    site = load_fleet(_fleet(tmp_path, state_dir="/srv/a/state")).fleet.sites[0]
    args = agent_args(site, "apply", "n0nce", Rollout(canary=1, batch_size="25%"))
    assert args == ["apply", "/srv/a/site.yaml", "--site", "site-a", "--nonce", "n0nce", "--state-dir",
                    "/srv/a/state", "--batch-size", "25%", "--canary", "1"]


def _summary(**over: object) -> SiteSummary:
    base: dict[str, object] = {"site": "site-a", "verb": "apply", "nonce": "n1", "ok": True, "started": "t0",
                               "finished": "t1", "sovkit_version": "0"}
    return SiteSummary.model_validate({**base, **over})


@pytest.mark.parametrize(("raw_from", "message"), [
    (lambda: sign_summary(_summary(), OTHER_KEY), "does not verify with its key"),
    (lambda: sign_summary(_summary(site="site-b"), SITE_KEY), "answers another request (site 'site-b'"),
    (lambda: sign_summary(_summary(verb="plan"), SITE_KEY), "answers another request (verb 'plan'"),
    (lambda: sign_summary(_summary(nonce="old"), SITE_KEY), "answers another request (nonce 'old'"),  # a replay
    (lambda: sign_summary(_summary(), SITE_KEY).replace('"sig":"', '"sig":"AAAA'), "does not verify"),
    (lambda: "not json", "summary"),
])
def test_summary_checks(raw_from: object, message: str) -> None:
    assert callable(raw_from)
    with pytest.raises(FleetError) as err:
        verify_summary(raw_from(), SITE_KEY.public_key, "site-a", "apply", "n1")
    assert message in err.value.message


def test_good_summary_verifies() -> None:
    got = verify_summary(sign_summary(_summary(failures=[]), SITE_KEY), SITE_KEY.public_key, "site-a", "apply", "n1")
    assert got.ok and got.site == "site-a"


def test_agent_runs_the_verb_at_the_site_and_signs(tmp_path: Path) -> None:
    """`sovkit fleet agent plan` on a local site: one JSON line, a summary signed with the site's own key."""
    site = make_site(tmp_path)
    key = site.root / ".sovkit" / "keys" / "operator.key"
    r = run_cli("fleet", "agent", "plan", site.path, "--site", "demo", "--nonce", "abc")
    assert r.code == 0, r.text
    from sovkit.signing.keys import PublicKey

    summary = verify_summary(r.out.strip(), PublicKey.load(key.with_name("operator.key.pub")), "demo", "plan", "abc")
    assert summary.policy_allowed is True and summary.changes["create"] > 0 and summary.attestations == 1
    bad = run_cli("fleet", "agent", "apply", site.path, "--site", "demo", "--nonce", "abc", "--canary", "0")
    assert bad.code == 1 and "--canary 0 is not valid" in bad.err and not bad.out
