"""The production examples (kr-telco, eu-sovereign) against a real registry filled from their bundle.

Small generated stand-ins take the place of their artifacts, with the examples' structure (firmware images,
wheelhouse tars, model directories, DSSE and OpenSSF model-signing signatures by generated keys); the copies are
re-pinned, bundled, pushed with `sovkit bundle import --registry`, and preflight — the controller side of apply —
pulls every file by digest and verifies digest and signature. This runs without root; the hosts' side — kr-telco
applied end to end on lab hosts from the registry — is tests/test_oci_examples_lab.py.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sovkit import api
from sovkit.components.host import desired_site
from sovkit.provision.preflight import run_preflight
from tests.bundlekit import SIGNER, make_bundle
from tests.conftest import INVENTORIES, run_cli
from tests.registrykit import LoopbackRegistry, running_registry
from tests.standins import StandIns

pytestmark = pytest.mark.slow
AUTH = "SOVKIT_TEST_REGISTRY_AUTH"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LoopbackRegistry]:
    with running_registry(tmp_path / "registry") as reg:
        yield reg


@pytest.mark.parametrize("example", ["kr-telco", "eu-sovereign"])
def test_example_artifacts_come_from_the_registry_verified(tmp_path: Path, registry: LoopbackRegistry,
                                                          example: str) -> None:
    root = tmp_path / example
    shutil.copytree(INVENTORIES / example, root)
    inv_file = root / "site.yaml"
    data = yaml.safe_load(inv_file.read_text())
    stand = StandIns(root, data)
    stand.fill()
    # bundle from the stand-in store (a local store for the bundling side), then push into the registry
    data["artifact_store"] = {"kind": "local", "path": "standin-store"}
    inv_file.write_text(yaml.safe_dump(data, sort_keys=False))
    make_bundle(inv_file, tmp_path / "bundle")
    pub = tmp_path / "bundle.pub"
    pub.write_bytes(SIGNER.public_key.pem())
    repo = f"{example}/site"
    r = run_cli("bundle", "import", tmp_path / "bundle", "--key", pub, "--registry", f"{registry.url}/{repo}",
                "--ca", registry.ca, "--credentials-env", AUTH, env={AUTH: registry.credentials})
    assert r.code == 0, r.text
    shutil.rmtree(stand.store)  # from here on every file must come from the registry
    shutil.copy(registry.ca, root / "registry-ca.pem")
    cred = root / "registry-credentials"
    cred.write_text(registry.credentials + "\n")
    data["artifact_store"] = {"kind": "oci", "url": registry.url, "repository": repo,
                              "jurisdiction": data["jurisdiction"].get("region") or data["jurisdiction"]["country"],
                              "ca": "registry-ca.pem", "credentials": {"file": "registry-credentials"},
                              "path": ".sovkit/artifact-cache"}
    inv_file.write_text(yaml.safe_dump(data, sort_keys=False))
    ws = api.open_workspace(inventory=inv_file)
    plan = api.make_plan(workspace=ws).plan
    desired = desired_site(ws.inventory)
    pre = run_preflight(ws.inventory, desired, plan)
    assert pre.failed_hosts == {}
    assert pre.signatures and all(c.verified for c in pre.signatures.values()), pre.signatures
    labels = {f"model:{m['name']}@{m['version']}" for m in data["models"]}
    labels |= {f"runtime:{rt['name']}@{rt['version']}" for rt in data["runtimes"]}
    assert labels <= set(pre.signatures)
    cache = root / ".sovkit" / "artifact-cache"
    for m in data["models"]:
        for art in m["files"]:
            assert hashlib.sha256((cache / art["path"]).read_bytes()).hexdigest() == art["sha256"]
