"""The production examples (kr-telco, eu-sovereign) applied end to end from a real OCI registry onto lab hosts.

Each example keeps its structure — racks, host names, CPUs, accelerator kinds and counts, firmware, runtimes
as wheelhouse archives, models with their signature format, deployments, serving groups, policy — with
small generated stand-in artifacts (tests/standins.py). Only what cannot exist here is rewritten: host
addresses become four lab hosts (network namespaces with their own sshd, tests/hostlab.py), each host
installs under its own ``root`` with the simulated hardware of its declared accelerators (sovkit.simulator,
the vendors' own tool argv), processes are supervised (no systemd in a namespace), and the artifact store
points at a loopback registry (Debian's docker-registry, TLS from a test CA, basic auth).

The bundle is pushed with ``sovkit bundle import --registry`` and the local copy deleted; ``sovkit apply``
then pulls every file by digest (the registry's access log shows each blob fetched), verifies it, and over
SSH flashes the firmware with the vendor procedures, installs the wheelhouse runtime with pip, installs the
model and starts serving. The runtimes are stand-ins named like the real packages whose console scripts
(``vllm``, ``furiosa-llm``) refuse any argv or environment the runtime would not take, then serve with the
demo runtime's server: a deployment only becomes healthy when sovkit launched it in the runtime's format.
A registry serving a wrong blob is covered on the demo site by tests/test_oci_store.py.

eu-sovereign's NVIDIA hosts take their firmware through nvfwupd with BMC credentials from the controller's
environment (the simulated BMC needs them non-empty; tests/test_firmware_nvidia_lab.py checks them).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sovkit.catalog import load_catalog
from sovkit.signing.keys import LocalSigner, write_keypair
from sovkit.simulator import install_simulator, read_devices
from sovkit.simulator.simcore import HARDWARE
from sovkit.state.models import State
from tests.bundlekit import SIGNER, make_bundle
from tests.conftest import INVENTORIES, CliResult, run_cli
from tests.hostlab import HostLab, create_lab, unavailable_reason
from tests.registrykit import LoopbackRegistry, running_registry
from tests.servingkit import running, stop_all
from tests.standins import OLD_FIRMWARE, StandIns, demo_runtime_wheel, standin_wheel

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(1800)]
AUTH = "SOVKIT_REGISTRY_AUTH"  # the name kr-telco's inventory gives


@pytest.fixture(scope="module")
def example_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostLab]:
    """Four lab hosts (both examples have four), shared by the two examples one after the other."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    built = create_lab(4, tmp_path_factory.mktemp("examplelab"))
    try:
        yield built
    finally:
        built.destroy()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackRegistry]:
    with running_registry(tmp_path_factory.mktemp("registry"), access_log=True) as reg:
        yield reg


def _env_name(host: str) -> str:
    return "SOVKIT_BMC_ADDRESS_" + re.sub(r"[^A-Z0-9]", "_", host.upper())


class Example:
    """A copy of a production example on the lab, its store in the registry (nothing local)."""

    def __init__(self, name: str, tmp: Path, lab: HostLab, registry: LoopbackRegistry) -> None:
        self.name, self.root = name, tmp / name
        shutil.copytree(INVENTORIES / name, self.root)
        self.path = self.root / "site.yaml"
        self.data: dict[str, Any] = yaml.safe_load(self.path.read_text())
        self.shipped_store = dict(self.data["artifact_store"])
        stand = StandIns(self.root, self.data)
        stand.fill()
        self.hosts_dir = tmp / f"{name}-hosts"
        self._to_lab(lab)
        # bundle from the stand-in store, push it into the registry under the example's repository, delete it
        self.data["artifact_store"] = {"kind": "local", "path": "standin-store"}
        self.save()
        make_bundle(self.path, tmp / f"{name}-bundle")
        pub = tmp / "bundle.pub"
        pub.write_bytes(SIGNER.public_key.pem())
        repo = self.shipped_store["repository"]
        r = run_cli("bundle", "import", tmp / f"{name}-bundle", "--key", pub, "--registry", f"{registry.url}/{repo}",
                    "--ca", registry.ca, "--credentials-env", AUTH, env={AUTH: registry.credentials})
        assert r.code == 0, r.text
        shutil.rmtree(stand.store)
        shutil.copy(registry.ca, self.root / "registry-ca.pem")
        store = {**self.shipped_store, "url": registry.url, "ca": "registry-ca.pem"}
        if "file" in store["credentials"]:  # eu-sovereign names a file; the test's own file stands in
            cred = self.root / "registry-credentials"
            cred.write_text(registry.credentials + "\n")
            store["credentials"] = {"file": str(cred)}
        self.data["artifact_store"] = store
        self.save()
        key = self.root / ".sovkit" / "keys" / "operator.key"
        write_keypair(LocalSigner.generate(), key, None)
        self.env = {"SOVKIT_SIGNING_KEY": str(key), AUTH: registry.credentials,
                    "SOVKIT_BMC_USER": "admin", "SOVKIT_BMC_PASSWORD": "lab-only-not-secret"}
        for h in self.data["hosts"]:  # NVIDIA's nvfwupd goes through each host's BMC (TEST-NET addresses)
            self.env[_env_name(h["name"])] = f"192.0.2.{10 + len(self.env)}"

    def _to_lab(self, lab: HostLab) -> None:
        """Host i of the example on lab host i: address, SSH as root, own root, supervised, simulated hardware."""
        ssh_dir = self.root / "ssh"
        ssh_dir.mkdir()
        shutil.copy(lab.key_path, ssh_dir / "id_ed25519")
        (ssh_dir / "id_ed25519").chmod(0o600)
        shutil.copy(lab.known_hosts, ssh_dir / "known_hosts")
        for h, lh in zip(self.data["hosts"], lab.hosts, strict=True):
            h.update(address=lh.address, connection="ssh", root=str(self.hosts_dir / h["name"]),
                     python_interpreter=sys.executable, service_manager="supervisor",
                     ssh={"user": "root", "port": 22, "key": "ssh/id_ed25519", "known_hosts": "ssh/known_hosts"})
            cards = [(a["kind"], OLD_FIRMWARE[a["kind"]]) for a in h["accelerators"] for _ in range(a["count"])]
            install_simulator(self.host_root(h["name"]), cards, cpu=h["cpu"], interpreter=sys.executable)

    def save(self) -> None:
        self.path.write_text(yaml.safe_dump(self.data, sort_keys=False))

    def host_root(self, name: str) -> Path:
        return self.hosts_dir / name

    def state(self) -> State:
        return State.model_validate_json((self.root / ".sovkit" / "state.json").read_bytes())

    def digests(self) -> set[str]:
        files = [fw["image"] for fw in self.data["firmware"]]
        files += [a for rt in self.data["runtimes"] for a in rt["artifacts"]]
        files += [a for m in self.data["models"] for a in m["files"]]
        return {a["sha256"] for a in files}


def _pulled(registry: LoopbackRegistry, repo: str) -> set[str]:
    """Blob digests the registry's access log shows fetched (GET, 200) from ``repo``."""
    pattern = re.compile(rf'"GET /v2/{re.escape(repo)}/blobs/sha256:([0-9a-f]{{64}}) HTTP/[0-9.]+" 200 ')
    return set(pattern.findall(registry.access_log_file.read_text(errors="replace")))


def _apply_and_check(ex: Example, registry: LoopbackRegistry, run: Callable[..., CliResult]) -> State:
    """The apply runs as `python -m sovkit`; the checks after it through the same ``main()`` in-process (``run``,
    the ``cli_env`` fixture: no interpreter start and imports per command)."""
    before = _pulled(registry, ex.shipped_store["repository"])
    assert not before & ex.digests(), "nothing may have been pulled before the apply"
    r = run_cli("apply", ex.path, "--auto-approve", env=ex.env)
    assert r.code == 0, r.text
    # every firmware image, runtime archive and model file came out of the registry, by digest
    assert ex.digests() <= _pulled(registry, ex.shipped_store["repository"])
    assert not (ex.root / "standin-store").exists()
    cache = ex.root / ".sovkit" / "artifact-cache"
    for m in ex.data["models"]:
        for art in m["files"]:
            assert hashlib.sha256((cache / art["path"]).read_bytes()).hexdigest() == art["sha256"]
    state = ex.state()
    fw_by_name = {fw["name"]: fw for fw in ex.data["firmware"]}
    for h in ex.data["hosts"]:
        rec = state.hosts[h["name"]]
        for acc in h["accelerators"]:
            want = str(fw_by_name[acc["firmware"]]["version"])
            devices = [d for d in read_devices(ex.host_root(h["name"])) if d.get("present", True)]
            assert devices and {d["firmware"] for d in devices} == {want}, (h["name"], devices)  # on the "hardware"
            assert rec.firmware[acc["kind"]].version == want
            assert {d.firmware for d in rec.firmware[acc["kind"]].devices.values()} == {want}
            assert len(rec.firmware[acc["kind"]].devices) == len(devices)
    for dep in ex.data["deployments"]:
        rt = next(x for x in ex.data["runtimes"] if x["name"] == dep["runtime"])
        model = next(x for x in ex.data["models"] if x["name"] == dep["model"])
        for host in dep["hosts"]:
            rec = state.hosts[host]
            assert rec.runtimes[rt["name"]].version == str(rt["version"])
            assert rec.models[model["name"]].version == str(model["version"])
            assert rec.serving[dep["name"]].status == "ready", rec.serving[dep["name"]]
            prefix = ex.host_root(host) / "opt/sovkit/runtimes" / rt["name"] / str(rt["version"])
            script = "furiosa-llm" if rt["package"] == "furiosa-llm" else "vllm"
            assert (prefix / "bin" / script).is_file(), f"the wheelhouse's console script on {host}"
    status = run("serving", "status", ex.path, "--json", env=ex.env)
    assert status.code == 0, status.text
    verified = run("attest", "verify", ex.path, "--key", f"{ex.env['SOVKIT_SIGNING_KEY']}.pub", env=ex.env)
    assert verified.code == 0, verified.text
    again = run("plan", ex.path, "--refresh", "--detailed-exitcode", env=ex.env)
    assert again.code == 0, again.text
    return state


def _launch_logs(ex: Example) -> str:
    return "".join(p.read_text(errors="replace") for p in ex.hosts_dir.glob("**/*.log"))


def test_kr_telco_applies_end_to_end_from_the_registry(example_lab: HostLab, registry: LoopbackRegistry,
                                                       tmp_path: Path, cli_env: Callable[..., CliResult]) -> None:
    ex = Example("kr-telco", tmp_path, example_lab, registry)
    try:
        _apply_and_check(ex, registry, cli_env)
        assert set(running(ex.hosts_dir)) >= {"sovkit-care-prefill", "sovkit-care-decode", "sovkit-care-router"}
        answer = cli_env("serving", "request", ex.path, "--to", "care", "--json", env=ex.env)
        assert answer.code == 0, answer.text
        assert "version 4.0" in json.loads(answer.out)["text"]
        logs = _launch_logs(ex)
        assert "vllm (sovkit stand-in): accepted" in logs and "RblnP2pGlooConnector" in logs
    finally:
        stop_all(ex.hosts_dir)


def test_eu_sovereign_applies_end_to_end_from_the_registry(example_lab: HostLab, registry: LoopbackRegistry,
                                                           tmp_path: Path, cli_env: Callable[..., CliResult]) -> None:
    ex = Example("eu-sovereign", tmp_path, example_lab, registry)
    try:
        _apply_and_check(ex, registry, cli_env)
        answer = cli_env("serving", "request", ex.path, "--to", "assist", "--json", env=ex.env)
        assert answer.code == 0, answer.text
        assert "version 24b-2503" in json.loads(answer.out)["text"]
        batch = cli_env("serving", "request", ex.path, "--to", "assist-batch", "--json", env=ex.env)
        assert batch.code == 0, batch.text
        logs = _launch_logs(ex)
        assert "furiosa-llm (sovkit stand-in): accepted" in logs and "NixlConnector" in logs
    finally:
        stop_all(ex.hosts_dir)


@pytest.mark.parametrize(("package", "argv", "env", "refusal"), [
    ("vllm-rbln", ["serve", "/m", "--served-model-name", "m", "--host", "0.0.0.0", "--port", "8000",
                   "--max-model-len", "4096", "--max-num-seqs", "8", "--block-size", "4096",
                   "--tensor-parallel-size", "4"], {"RBLN_VISIBLE_DEVICES": "0,1,2,3",
                                                    "VLLM_RBLN_NUM_DEVICES_PER_LOCAL_RANK": "4"},
     "--tensor-parallel-size 1"),
    ("vllm", ["serve", "/m", "--served-model-name", "m", "--host", "0.0.0.0", "--port", "8000",
              "--tensor-parallel-size", "2", "--max-model-len", "4096", "--max-num-seqs", "8", "--devices", "0,1"],
     {"CUDA_VISIBLE_DEVICES": "0,1"}, "unrecognized arguments: --devices"),
    ("furiosa-llm", ["serve", "/m", "--devices", "0,1", "--tensor-parallel-size", "2", "--port", "8000",
                     "--served-model-name", "m", "--host", "0.0.0.0"], {}, "--devices must look like npu:0,npu:1"),
])
def test_the_standin_runtimes_refuse_argv_their_runtime_would_not_take(
        tmp_path: Path, package: str, argv: list[str], env: dict[str, str], refusal: str) -> None:
    """What makes the lab test above prove the launch format: a wrong argv never reaches a listening server."""
    for name, data in (standin_wheel(package, "1.0"), demo_runtime_wheel()):
        (tmp_path / name).write_bytes(data)
    target = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--quiet", "--find-links", str(tmp_path),
                    "--target", str(target), f"{package}==1.0"], check=True)
    script = target / "bin" / ("furiosa-llm" if package == "furiosa-llm" else "vllm")
    proc = subprocess.run([str(script), *argv], capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), **env})
    assert proc.returncode == 2, proc.stderr
    assert "(sovkit stand-in): refusing" in proc.stderr and refusal in proc.stderr, proc.stderr



def test_the_catalog_expects_as_many_devices_per_card_as_the_simulator_lists() -> None:
    """A REBEL-Quad card lists four NPUs in the simulator; the firmware role must expect four per card."""
    catalog = load_catalog()
    expected = {kind: hw["npus"] for kind, hw in HARDWARE.items()}
    assert {kind: catalog.accelerators[kind].devices_per_card for kind in HARDWARE} == expected
