"""Build test sites from the demo inventory: local or lab hosts, extra firmware/models, broken artifacts."""

from __future__ import annotations

import hashlib
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import yaml

from sovkit.signing.artifacts import sign_artifacts
from sovkit.signing.keys import LocalSigner, write_keypair
from sovkit.simulator import install_simulator, make_firmware_image
from tests.conftest import INVENTORIES

DEMO = INVENTORIES / "demo"
PUBLISHER = LocalSigner.from_seed(b"sovkit demo publisher (public seed, demo only)")
VENDOR = LocalSigner.from_seed(b"sovkit demo npu vendor (public seed, demo only)")
KIND = "rebellions-atom-max"


class Site:
    """A writable copy of the demo site whose YAML can be edited as data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "site.yaml"
        self.data: dict[str, Any] = yaml.safe_load(self.path.read_text())

    @property
    def store(self) -> Path:
        return self.root / "artifacts"

    def save(self) -> Path:
        self.path.write_text(yaml.safe_dump(self.data, sort_keys=False))
        return self.path

    def put(self, rel: str, data: bytes) -> dict[str, Any]:
        f = self.store / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        return {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}

    def add_firmware(self, name: str, version: str, image: bytes | None = None) -> None:
        rel = f"firmware/{name}.fw"
        art = self.put(rel, image if image is not None else make_firmware_image(KIND, version, seed="test"))
        env = sign_artifacts({rel: art["sha256"]}, VENDOR, "firmware", name, version)
        self.put(rel + ".sig", env.to_json().encode())
        self.data["firmware"].append({"name": name, "vendor": "rebellions", "accelerator": KIND,
                                      "version": version, "image": art, "signature": rel + ".sig"})

    def add_model(self, name: str, version: str, files: dict[str, bytes], sign: bool = True) -> None:
        arts = [self.put(f"models/{name}/{version}/{fname}", data) for fname, data in files.items()]
        sig = f"models/{name}/{version}/model.sig"
        if sign:
            env = sign_artifacts({a["path"]: a["sha256"] for a in arts}, PUBLISHER, "model", name, version)
            self.put(sig, env.to_json().encode())
        self.data["models"].append({
            "name": name, "version": version, "publisher": "sovkit-demo-lab", "license": "apache-2.0",
            "origin": "KR", "files": arts, "signature": sig,
            "base_models": [{"name": "demo-ko-base", "publisher": "sovkit-demo-lab", "origin": "KR",
                             "license": "apache-2.0"}],
            "card": {"purpose": "test model", "datasets": ["synthetic"], "limitations": "test only"},
        })

    def bump_model(self, name: str, version: str, files: dict[str, bytes]) -> None:
        """Give model ``name`` a new version with new files, signed by the demo publisher."""
        arts = [self.put(f"models/{name}/{version}/{fname}", data) for fname, data in files.items()]
        sig = f"models/{name}/{version}/model.sig"
        env = sign_artifacts({a["path"]: a["sha256"] for a in arts}, PUBLISHER, "model", name, version)
        self.put(sig, env.to_json().encode())
        self.model(name).update(version=version, files=arts, signature=sig)

    def model(self, name: str) -> dict[str, Any]:
        return next(m for m in self.data["models"] if m["name"] == name)

    def host(self, name: str) -> dict[str, Any]:
        return next(h for h in self.data["hosts"] if h["name"] == name)

    def host_root(self, name: str) -> Path:
        root = Path(self.host(name)["root"])
        return root if root.is_absolute() else self.root / root


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on this machine right now (bound to port 0, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def make_site(tmp: Path, hosts: list[dict[str, Any]] | None = None) -> Site:
    """Copy the demo site to ``tmp``; optionally replace its hosts (deployments are re-spread over them).

    With new hosts, chat-prefill goes to the first, chat-decode to the others (or the first again), and the
    serving group's router to the first; their device pins are dropped (first-fit on the new hosts, so both fit
    when they share one).
    """
    root = tmp / "site"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns("generate.py", "*.in", ".sovkit", "hosts"))
    site = Site(root)
    if hosts is not None:
        site.data["hosts"] = hosts
        names = [h["name"] for h in hosts]
        site.data["deployments"][0]["hosts"] = names[:1]
        site.data["deployments"][1]["hosts"] = names[1:] or names[:1]
        for d in site.data["deployments"]:
            d.pop("devices", None)
        site.data["serving_groups"][0]["router"]["host"] = names[0]
    ports = free_ports(4)  # the demo's fixed ports would clash with another site's servers still running
    site.data["deployments"][0]["port"], site.data["deployments"][1]["port"] = ports[0], ports[1]
    site.data["serving_groups"][0]["kv_transfer"]["port"] = ports[2]
    site.data["serving_groups"][0]["router"]["port"] = ports[3]
    key = root / ".sovkit" / "keys" / "operator.key"
    write_keypair(LocalSigner.generate(), key, None)
    site.save()
    for h in site.data["hosts"]:
        count = sum(a["count"] for a in h.get("accelerators", []))
        install_simulator(site.host_root(h["name"]), [(KIND, "1.0.0")] * count, cpu=h["cpu"],
                          interpreter=sys.executable)
    return site


def corrupt_image(version: str) -> bytes:
    """A firmware image whose payload does not match its header digest (the device must refuse it)."""
    good = make_firmware_image(KIND, version, seed="corrupt")
    return good[:-10] + bytes(10)




def make_lab_site(tmp: Path, lab: Any, roots: Path | None = None) -> Site:
    """A site whose hosts are the lab's SSH test hosts (``lab`` is a tests.hostlab.HostLab).

    Each host connects over SSH with the lab's client key and pinned known_hosts
    (copied into the site, since inventory paths are relative), uses the test
    run's Python, and installs under its own root — by default a fresh directory
    under ``tmp`` so tests sharing the session lab never see each other's files.
    """
    roots = roots or tmp / "hosts"
    entries = lab.site_hosts(rack="demo-rack", cpu="arm-neoverse-v2",
                             accelerators=[{"kind": KIND, "count": 2, "firmware": "atom-max-fw-1.2.0"}])
    for e in entries:
        e["root"] = str(roots / e["name"])
        e["ssh"].update(key="ssh/id_ed25519", known_hosts="ssh/known_hosts")
        e["python_interpreter"] = sys.executable
        e["service_manager"] = "supervisor"  # lab hosts are network namespaces: no systemd inside
    site = make_site(tmp, hosts=entries)
    ssh_dir = site.root / "ssh"
    ssh_dir.mkdir()
    shutil.copy(lab.key_path, ssh_dir / "id_ed25519")
    (ssh_dir / "id_ed25519").chmod(0o600)
    shutil.copy(lab.known_hosts, ssh_dir / "known_hosts")
    site.data["racks"][0]["power_budget_w"] = 6000
    site.save()
    return site


def big_site(tmp: Path, n: int) -> Site:
    """N ssh hosts in racks of 20, two NPUs each, spread over deployments of 100 hosts (no simulators needed)."""
    site = make_site(tmp)  # the demo's own hosts, then replaced (make_site cannot re-spread over no hosts)
    site.data["serving_groups"] = []  # the demo's group names deployments this site replaces
    site.data["racks"] = [{"name": f"rack-{r:04d}", "power_budget_w": 40000, "location": "hall"}
                          for r in range((n + 19) // 20)]
    site.data["hosts"] = [
        {"name": f"node-{i:05d}", "rack": f"rack-{i // 20:04d}",
         "address": f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
         "arch": "aarch64", "cpu": "arm-neoverse-v2", "root": f"/srv/node-{i:05d}",
         "accelerators": [{"kind": KIND, "count": 2, "firmware": "atom-max-fw-1.2.0"}]}
        for i in range(n)
    ]
    names = [h["name"] for h in site.data["hosts"]]
    site.data["deployments"] = [
        {"name": f"chat-{d // 100:03d}", "model": "demo-ko-chat", "runtime": "simnpu-serve",
         "hosts": names[d:d + 100], "role": "both",
         "tensor_parallel": 2, "port": 8100 + (d // 100) % 2}
        for d in range(0, n, 100)
    ]
    site.save()
    return site
