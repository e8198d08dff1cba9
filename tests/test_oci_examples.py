"""The production examples (kr-telco, eu-sovereign) against a real registry filled from their bundle.

Small generated stand-ins take the place of their artifacts, with the examples' structure (firmware images,
wheelhouse tars, model directories, DSSE and OpenSSF model-signing signatures by generated keys); the copies are
re-pinned, bundled, pushed with `sovkit bundle import --registry`, and preflight — the controller side of apply —
pulls every file by digest and verifies digest and signature. The hosts' side (real SSH addresses, the examples'
accelerators and the wheelhouse runtime format) is not run here.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from model_signing import signing

from sovkit import api
from sovkit.components.host import desired_site
from sovkit.provision.preflight import run_preflight
from sovkit.signing.artifacts import sign_artifacts
from sovkit.signing.keys import LocalSigner
from tests.bundlekit import SIGNER, make_bundle
from tests.conftest import INVENTORIES, run_cli
from tests.registrykit import LoopbackRegistry, running_registry

pytestmark = pytest.mark.slow
AUTH = "SOVKIT_TEST_REGISTRY_AUTH"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LoopbackRegistry]:
    with running_registry(tmp_path / "registry") as reg:
        yield reg


def _tar(name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = f"stand-in wheel for {name}\n".encode()
        info = tarfile.TarInfo(f"wheelhouse/{name}-py3-none-any.whl")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class StandIns:
    """Writes stand-in artifacts into ``store`` and re-pins/re-keys the inventory data to match."""

    def __init__(self, root: Path, data: dict[str, Any]) -> None:
        self.root, self.data, self.store = root, data, root / "standin-store"
        self.keys: dict[tuple[str, str], LocalSigner] = {}

    def key(self, section: str, name: str) -> LocalSigner:
        if (section, name) not in self.keys:
            signer = LocalSigner.generate("ecdsa-p256")  # model-signing's elliptic key signer needs EC
            entry = next(k for k in self.data["trust_roots"][section] if k["name"] == name)
            (self.root / entry["public_key"]).write_bytes(signer.public_key.pem())
            self.keys[(section, name)] = signer
        return self.keys[(section, name)]

    def put(self, art: dict[str, Any], data: bytes) -> None:
        f = self.store / art["path"]
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        art.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    def sign(self, path: str, files: list[dict[str, Any]], signer: LocalSigner, kind: str,
             item: dict[str, Any]) -> None:
        env = sign_artifacts({a["path"]: a["sha256"] for a in files}, signer, kind, item["name"], item["version"])
        (self.store / path).write_bytes(env.to_json().encode())

    def fill(self) -> None:
        for fw in self.data["firmware"]:
            self.put(fw["image"], f"stand-in firmware {fw['name']} {fw['version']}\n".encode() * 64)
            self.sign(fw["signature"], [fw["image"]], self.key("vendors", fw["vendor"]), "firmware", fw)
        for rt in self.data["runtimes"]:
            for art in rt["artifacts"]:
                self.put(art, _tar(rt["package"]) if art["path"].endswith(".tar") else b"stand-in runtime\n")
            self.sign(rt["signature"], rt["artifacts"], self.key("vendors", rt["vendor"]), "runtime", rt)
        for m in self.data["models"]:
            for art in m["files"]:
                self.put(art, f"stand-in {posixpath.basename(art['path'])} of {m['name']}\n".encode() * 32)
            signer = self.key("publishers", m["publisher"])
            if m.get("signature_format") == "model-signing":
                priv = self.root / f"{m['publisher']}.pem"
                priv.write_bytes(signer.private_pem(None))
                model_dir = self.store / posixpath.dirname(m["files"][0]["path"])
                signing.Config().use_elliptic_key_signer(private_key=priv).sign(model_dir, self.store / m["signature"])
            else:
                self.sign(m["signature"], m["files"], signer, "model", m)


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
