"""Finding 4: no secret from sovkit's environment lands in a run directory.

ansible-runner seeds the playbook's environment from the caller's and writes it to
``.sovkit/runs/<id>/artifacts/<ident>/command``; the key passphrase used to be kept there, beside the key.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sovkit.signing.keys import LocalSigner, write_keypair
from tests.conftest import run_cli
from tests.sitefactory import make_site

PASSPHRASE = "pp-7f3a9c1e-never-on-disk"
OPA_TOKEN = "opa-21be40d5-never-on-disk"
DB_SECRET = "db-9c0d77aa-never-on-disk"


def _tree_holding(root: Path, needle: bytes) -> list[Path]:
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink() and needle in p.read_bytes():
                hits.append(p)
    return hits


@pytest.mark.slow
def test_apply_and_refresh_keep_no_secret_on_disk(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    key = site.root / ".sovkit/keys/operator.key"
    key.unlink()
    key.with_name("operator.key.pub").unlink()
    write_keypair(LocalSigner.generate(), key, PASSPHRASE.encode())
    env = {"SOVKIT_KEY_PASSPHRASE": PASSPHRASE, "SOVKIT_OPA_TOKEN": OPA_TOKEN,
           "DATABASE_URL": f"postgres://svc:{DB_SECRET}@db.internal/x"}  # a secret under an innocent name
    r = run_cli("apply", site.path, "--auto-approve", env=env)
    assert r.code == 0, r.text
    assert run_cli("refresh", site.path, env=env).code == 0
    runs = list((site.root / ".sovkit/runs").iterdir())
    assert any(p.name.startswith("apply-") for p in runs) and any(p.name.startswith("observe-") for p in runs)
    assert list((site.root / ".sovkit/runs").glob("apply-*/artifacts/*/command")), "runner's env file is checked"
    for secret in (PASSPHRASE, OPA_TOKEN, DB_SECRET):
        assert _tree_holding(site.root, secret.encode()) == [], f"{secret} was written to disk"


def test_runner_env_drops_secrets_and_unlisted_inherited_variables() -> None:
    from sovkit.provision.ansible_executor import runner_env

    inherited = {"PATH": "/usr/bin", "HOME": "/root", "SOVKIT_KEY_PASSPHRASE": PASSPHRASE,
                 "SOVKIT_OPA_TOKEN": OPA_TOKEN, "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
                 "ANSIBLE_BECOME_PASSWORD": "become-pw-value", "DATABASE_URL": "postgres://x",
                 "PYTHONPATH": f"/opt/{PASSPHRASE}"}
    env = {**inherited, "ANSIBLE_STDOUT_CALLBACK": "awx_display", "AWX_ISOLATED_DATA_DIR": "/run/x"}
    assert runner_env(env, inherited) == {"PATH": "/usr/bin", "HOME": "/root",
                                          "ANSIBLE_STDOUT_CALLBACK": "awx_display",
                                          "AWX_ISOLATED_DATA_DIR": "/run/x"}


def test_bmc_address_and_user_reach_ansible_the_password_only_as_a_private_file(tmp_path: Path) -> None:
    from sovkit.provision.ansible_executor import bmc_password_file, runner_env

    inherited = {"PATH": "/usr/bin", "SOVKIT_BMC_ADDRESS_GPU_01": "10.0.9.11", "SOVKIT_BMC_USER": "fwadmin",
                 "SOVKIT_BMC_PASSWORD": "bmc-pw-value-123", "SOVKIT_BMC_PASSWORD_FILE": "/nonexistent"}
    assert runner_env(inherited, inherited) == {"PATH": "/usr/bin", "SOVKIT_BMC_ADDRESS_GPU_01": "10.0.9.11",
                                                "SOVKIT_BMC_USER": "fwadmin"}
    with bmc_password_file({"SOVKIT_BMC_PASSWORD": "bmc-pw-value-123"}) as path:
        assert path is not None
        written = Path(path)
        assert written.read_text() == "bmc-pw-value-123" and written.stat().st_mode & 0o077 == 0
    assert not written.exists()  # removed when the run ends
    given = tmp_path / "pw"
    given.write_text("x")
    with bmc_password_file({"SOVKIT_BMC_PASSWORD_FILE": str(given), "SOVKIT_BMC_PASSWORD": "y"}) as path:
        assert path == str(given)
    assert given.exists()  # the operator's own file is never removed
    with bmc_password_file({}) as path:
        assert path is None


def test_a_secret_found_in_a_run_directory_is_scrubbed_and_reported(tmp_path: Path) -> None:
    from sovkit.provision.ansible_executor import scrub_secrets, secret_values

    run = tmp_path / "run"
    (run / "artifacts/x").mkdir(parents=True)
    (run / "artifacts/x/command").write_text(f'{{"env": {{"P": "{PASSPHRASE}"}}}}')
    (run / "clean.txt").write_text("nothing here")
    found = scrub_secrets(run, secret_values({"SOVKIT_KEY_PASSPHRASE": PASSPHRASE, "SHORT_TOKEN": "x"}))
    assert found == [(run / "artifacts/x/command", "SOVKIT_KEY_PASSPHRASE")]
    assert PASSPHRASE not in (run / "artifacts/x/command").read_text()
    assert "<SOVKIT_KEY_PASSPHRASE redacted>" in (run / "artifacts/x/command").read_text()
