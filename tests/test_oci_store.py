"""artifact_store.kind: oci against a real registry (Debian's docker-registry on loopback, TLS from a test CA,
bcrypt htpasswd auth): bundle import --registry, pull by digest, wrong blob, registry down, bad credentials, and
an apply of the demo site from the registry onto local hosts."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovkit.artifactstore import OciStore
from sovkit.artifactstore.oci import (
    ARTIFACT_TYPE,
    LAYER,
    TITLE,
    BlobRefused,
    Credentials,
    Registry,
    RegistryError,
)
from sovkit.inventory import load_inventory
from sovkit.simulator import read_devices
from tests.bundlekit import SIGNER, make_bundle
from tests.conftest import run_cli
from tests.registrykit import PASSWORD, USER, LoopbackRegistry, running_registry
from tests.sitefactory import Site, make_site

pytestmark = pytest.mark.slow
REPO = "kr/gasan/artifacts"
AUTH = "SOVKIT_TEST_REGISTRY_AUTH"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LoopbackRegistry]:
    with running_registry(tmp_path / "registry") as reg:
        yield reg


def _env(reg: LoopbackRegistry, password: str = PASSWORD) -> dict[str, str]:
    return {AUTH: f"{USER}:{password}"}


def _pub(tmp: Path) -> Path:
    """The bundle tests' signer's public key as a file for --key."""
    f = tmp / "bundle.pub"
    f.write_bytes(SIGNER.public_key.pem())
    return f


def _fill(site: Site, reg: LoopbackRegistry, tmp: Path) -> Path:
    """Bundle the site, push the bundle into the registry with the CLI, and return the bundle."""
    bundle = tmp / "bundle"
    make_bundle(site.path, bundle)
    key = _pub(tmp)
    r = run_cli("bundle", "import", bundle, "--key", key, "--registry", f"{reg.url}/{REPO}", "--ca", reg.ca,
                "--credentials-env", AUTH, env=_env(reg))
    assert r.code == 0, r.text
    assert "blob(s) uploaded" in r.out
    return bundle


def _to_oci(site: Site, reg: LoopbackRegistry) -> Path:
    """Point the site at the registry and remove its local store (so every file must come from the registry)."""
    shutil.copy(reg.ca, site.root / "registry-ca.pem")
    site.data["artifact_store"] = {"kind": "oci", "url": reg.url, "repository": REPO, "jurisdiction": "KR-11",
                                   "ca": "registry-ca.pem", "credentials": {"env": AUTH},
                                   "path": ".sovkit/artifact-cache"}
    site.save()
    shutil.rmtree(site.store)
    return site.root / ".sovkit" / "artifact-cache"


def _store(site: Site, reg: LoopbackRegistry, password: str = PASSWORD, ca: Path | None = None) -> OciStore:
    return OciStore(site.root / "pulled", Registry(reg.url, REPO, ca or reg.ca, Credentials(USER, password)),
                    "sovkit-store")


def test_bundle_import_pushes_oras_artifacts_and_pull_by_digest_round_trips(tmp_path: Path,
                                                                             registry: LoopbackRegistry) -> None:
    site = make_site(tmp_path)
    files = {p.relative_to(site.store).as_posix(): p.read_bytes() for p in site.store.rglob("*") if p.is_file()}
    bundle = _fill(site, registry, tmp_path)
    reg = Registry(registry.url, REPO, registry.ca, Credentials(USER, PASSWORD))
    manifest = reg.manifest("sovkit-store")
    assert manifest is not None and manifest["artifactType"] == ARTIFACT_TYPE
    layers = {d["annotations"][TITLE]: d for d in manifest["layers"]}
    assert set(layers) == set(files), "one titled layer per store file"
    assert all(d["mediaType"] == LAYER for d in layers.values())
    store = _store(site, registry)
    for rel, data in files.items():
        digest = layers[rel]["digest"].removeprefix("sha256:")
        assert digest == hashlib.sha256(data).hexdigest()
        got = store.fetch(rel, digest)
        assert got is not None and got.path.read_bytes() == data
    sig = next(r for r in files if r.endswith(".sig"))
    got = store.fetch(sig, None)  # an unpinned file is found by its title, then pulled by digest
    assert got is not None and got.path.read_bytes() == files[sig]
    # a second import sends nothing again and keeps the same store manifest
    again = run_cli("bundle", "import", bundle, "--key", _pub(tmp_path), "--registry", f"{registry.url}/{REPO}",
                    "--ca", registry.ca, "--credentials-env", AUTH, env=_env(registry))
    assert again.code == 0, again.text
    assert "0 blob(s) uploaded" in again.out


def test_wrong_password_missing_ca_and_missing_blob_are_clear_errors(tmp_path: Path,
                                                                     registry: LoopbackRegistry) -> None:
    site = make_site(tmp_path)
    bundle = tmp_path / "bundle"
    make_bundle(site.path, bundle)
    r = run_cli("bundle", "import", bundle, "--key", _pub(tmp_path), "--registry", f"{registry.url}/{REPO}",
                "--ca", registry.ca, "--credentials-env", AUTH, env=_env(registry, "wrong"))
    assert r.code == 1
    assert f"the registry {registry.url} refused user 'sovkit' (401 Unauthorized)" in r.err
    assert "Traceback" not in r.err
    r = run_cli("bundle", "import", bundle, "--key", _pub(tmp_path), "--registry", f"{registry.url}/{REPO}",
                "--credentials-env", AUTH, env=_env(registry))
    assert r.code == 1 and f"TLS to the registry {registry.url} failed" in r.err, r.text
    assert "--ca" in r.err
    with pytest.raises(RegistryError, match="401"):
        _store(site, registry, password="wrong").fetch("firmware/x.fw", "0" * 64)
    with pytest.raises(BlobRefused, match="is not in the registry"):
        Registry(registry.url, REPO, registry.ca, Credentials(USER, PASSWORD)).pull_blob(
            "0" * 64, tmp_path / "never", "artifact firmware/x.fw")
    assert not (tmp_path / "never").exists()


def test_apply_from_the_registry_installs_the_demo_site(tmp_path: Path, registry: LoopbackRegistry) -> None:
    site = make_site(tmp_path)
    _fill(site, registry, tmp_path)
    cache = _to_oci(site, registry)
    r = run_cli("apply", site.path, "--auto-approve", env=_env(registry))
    assert r.code == 0, r.text
    for host in ("npu-node-1", "npu-node-2"):
        root = site.host_root(host)
        assert {d["firmware"] for d in read_devices(root)} == {"1.2.0"}
        model = root / "opt/sovkit/models/demo-ko-chat/current/model.safetensors"
        assert model.read_bytes() == (cache / "models/demo-ko-chat/1.0/model.safetensors").read_bytes()
    inv = load_inventory(site.path)
    for m in inv.site.models:
        for a in m.files:
            assert hashlib.sha256((cache / a.path).read_bytes()).hexdigest() == a.sha256
    again = run_cli("plan", site.path, "--detailed-exitcode", env=_env(registry))
    assert again.code == 0 and "No changes" in again.out, again.text


def test_a_registry_serving_a_wrong_blob_is_refused_and_nothing_is_installed(tmp_path: Path,
                                                                              registry: LoopbackRegistry) -> None:
    site = make_site(tmp_path)
    _fill(site, registry, tmp_path)
    model = next(a for a in site.model("demo-ko-chat")["files"] if a["path"].endswith("model.safetensors"))
    blob = registry.blob_file(model["sha256"])
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF  # same size, other bytes: only hashing notices
    blob.write_bytes(bytes(data))
    cache = _to_oci(site, registry)
    r = run_cli("apply", site.path, "--auto-approve", env=_env(registry))
    assert r.code != 0
    assert "preflight" in r.err and "the registry served artifact models/demo-ko-chat/1.0/model.safetensors" in r.err
    assert "refused, nothing was installed" in r.err
    assert not (cache / model["path"]).exists(), "a wrong blob must never land in the cache"
    assert not list(cache.rglob("*.partial-*"))
    for host in ("npu-node-1", "npu-node-2"):
        root = site.host_root(host)
        assert not (root / "opt/sovkit/models/demo-ko-chat").exists(), "nothing may be installed"
        assert {d["firmware"] for d in read_devices(root)} == {"1.0.0"}


def test_a_registry_that_is_down_stops_apply_before_anything_changes(tmp_path: Path,
                                                                      registry: LoopbackRegistry) -> None:
    site = make_site(tmp_path)
    _fill(site, registry, tmp_path)
    cache = _to_oci(site, registry)
    registry.stop()
    state = site.root / ".sovkit" / "state.json"
    before = state.read_bytes() if state.exists() else None
    r = run_cli("apply", site.path, "--auto-approve", env=_env(registry))
    assert r.code == 1
    assert f"the registry {registry.url} is not reachable" in r.err
    assert "start the registry" in r.err and "Traceback" not in r.err
    assert (state.read_bytes() if state.exists() else None) == before, "state must be unchanged"
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]
    for host in ("npu-node-1", "npu-node-2"):
        root = site.host_root(host)
        assert not (root / "opt/sovkit").exists()
        assert {d["firmware"] for d in read_devices(root)} == {"1.0.0"}
