"""Real test hosts on one machine: network namespaces, each with its own address and its own sshd.

A lab of N hosts is built like this (all names carry a per-lab prefix ``skl<6 hex>``
so several labs can coexist on one machine)::

    root namespace                          namespace skl1a2b3c-h1
    bridge skl1a2b3cbr  10.77.X.1/24  <--->  veth skl1a2b3cv1 | eth0 10.77.X.11/24   sshd -D (ListenAddress 10.77.X.11)
                                      <--->  veth skl1a2b3cv2 | eth0 10.77.X.12/24   (namespace skl1a2b3c-h2)
                                      ...

* The /24 is chosen at random inside 10.77.0.0/16 among subnets not already
  present on the machine (``ip -o addr`` / ``ip -o route``), under a lock file
  so two labs starting at the same moment cannot pick the same one.
* Every host has its own sshd (host key, config, pid, log under
  ``{labdir}/sshd/{name}/``), key-only root login with a client key pair
  generated for the lab, and a generated ``known_hosts`` so host keys are
  really checked. Hosts share this machine's filesystem; each gets its own
  root directory ``{labdir}/hosts/{name}/`` for the files it "installs".
* The Python interpreter on the hosts is ``sys.executable`` (pip available).
* ``create_lab(..., init="systemd")`` makes every host systemd-managed: a real
  ``systemd --system`` (Debian's ``/lib/systemd/systemd``) runs as PID 1 of its
  own PID, mount and UTS namespaces inside the host's network namespace, and the
  host's sshd is a unit of it — so commands arriving over SSH share its mount
  namespace and ``systemctl`` talks to that systemd (``/run`` is a tmpfs of its
  own). It loads units ONLY from lab-owned directories (``SYSTEMD_UNIT_PATH``
  without a trailing ``:``, so none of the OS's units, and no generators): the
  lab's own ``{labdir}/systemd/{name}/units`` (an empty ``sysinit``/``basic``/
  ``network``/``multi-user`` target set, ``sovkit-lab.target``, the sshd unit)
  and ``/etc/systemd/system``, over which the host root's
  ``{root}/etc/systemd/system`` is bind-mounted — where sovkit writes its units
  and where ``systemctl enable`` links them. Each systemd gets its own cgroup
  (``/sys/fs/cgroup/{systemd,unified}/{prefix}-{name}``), its log is
  ``{labdir}/systemd/{name}/systemd.log`` (services' output included), and
  teardown SIGKILLs its PID 1, which ends everything in its PID namespace.
  The default (``init="sshd"``) is a bare sshd per host, as before.
* :meth:`HostLab.link_down` takes the host's veth (root-namespace end) down:
  the host becomes unreachable, as if its cable were pulled.
* :meth:`HostLab.destroy` removes exactly what was created, by name (sshd and
  any other process inside the lab's namespaces, the namespaces, the veths,
  the bridge). It is idempotent and is also registered with ``atexit``.

Traffic only ever goes to the lab's own addresses.

Command line (handy for trying sovkit by hand)::

    python -m tests.hostlab up [--hosts 3] [--dir DIR]   # builds a lab, prints an Ansible inventory, waits for Ctrl-C
    python -m tests.hostlab up --init systemd            # the same with systemd-managed hosts
    python -m tests.hostlab down DIR                      # tears down a lab left behind (reads DIR/lab.json)
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import json
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAB_NETWORK = ipaddress.ip_network("10.77.0.0/16")
HOST_OFFSET = 10  # host i (1-based) gets .(10 + i); the bridge gets .1
LOCK_FILE = Path("/run/lock/sovkit-hostlab.lock")
SSH_PORT = 22
READY_TIMEOUT = 15.0


class LabError(RuntimeError):
    """The lab could not be built or torn down."""


def find_sshd() -> str | None:
    found = shutil.which("sshd") or ("/usr/sbin/sshd" if os.access("/usr/sbin/sshd", os.X_OK) else None)
    return os.path.abspath(found) if found else None


def unavailable_reason() -> str | None:
    """Why a lab cannot be built here (None when it can): root, ``ip`` and ``sshd`` are needed."""
    if os.geteuid() != 0:
        return "host lab needs root (network namespaces, veth, bridge)"
    if shutil.which("ip") is None:
        return "host lab needs the `ip` command (Debian package iproute2)"
    if find_sshd() is None:
        return "host lab needs sshd (Debian package openssh-server)"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"`{shlex.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a", encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _used_subnets() -> set[ipaddress.IPv4Network]:
    """/24s inside 10.77.0.0/16 that already have an address or a route on this machine."""
    text = _run("ip", "-o", "-4", "addr", "show").stdout
    text += _run("ip", "-o", "-4", "route", "show", "table", "all").stdout
    used: set[ipaddress.IPv4Network] = set()
    for match in re.finditer(r"\b(\d+\.\d+\.\d+\.\d+)(?:/(\d+))?", text):
        addr = ipaddress.ip_address(match.group(1))
        if isinstance(addr, ipaddress.IPv4Address) and addr in LAB_NETWORK:
            used.add(ipaddress.ip_network(f"{addr}/24", strict=False))
        if match.group(2) is not None:  # a wider route covering lab subnets
            net = ipaddress.ip_network(f"{match.group(1)}/{match.group(2)}", strict=False)
            if isinstance(net, ipaddress.IPv4Network) and net.prefixlen <= 24 and net.overlaps(LAB_NETWORK):
                used.update(s for s in LAB_NETWORK.subnets(new_prefix=24) if s.subnet_of(net))
    return used


def _existing_names() -> str:
    return _run("ip", "netns", "list").stdout + _run("ip", "-o", "link", "show").stdout


@dataclass(frozen=True)
class LabHost:
    """One test host. ``name`` is its inventory name; ``root`` its own root directory."""

    name: str
    index: int
    netns: str
    veth: str  # root-namespace end of the veth pair, a port of the lab bridge
    address: str
    root: Path
    sshd_dir: Path  # host key, sshd_config, pid, log
    remote_tmp: Path  # Ansible's remote temp dir, kept out of ``root`` so ``root`` holds only what was installed
    init: str = "sshd"  # "systemd": a systemd is PID 1 of the host and runs its sshd (see the module docstring)

    @property
    def systemd_dir(self) -> Path:
        """The lab's own files for this host's systemd: ``units/``, ``empty/``, ``boot.sh``, ``systemd.log``."""
        return self.sshd_dir.parent.parent / "systemd" / self.name

    @property
    def sshd_pidfile(self) -> Path:
        return self.sshd_dir / "sshd.pid"

    @property
    def sshd_log(self) -> Path:
        return self.sshd_dir / "sshd.log"


@dataclass
class HostLab:
    """A set of test hosts reachable over SSH. Build with :func:`create_lab`."""

    labdir: Path
    prefix: str
    subnet: ipaddress.IPv4Network
    hosts: list[LabHost] = field(default_factory=list)
    python: str = sys.executable
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _netns: list[str] = field(default_factory=list, repr=False)
    _links: list[str] = field(default_factory=list, repr=False)
    _routes: list[str] = field(default_factory=list, repr=False)
    _pid1: dict[str, int] = field(default_factory=dict, repr=False)  # systemd hosts: PID 1 of each, as seen here
    gateway_host: LabHost | None = None
    _destroyed: bool = field(default=False, repr=False)

    # ----------------------------------------------------------------- names and paths

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def gateway(self) -> str:
        """The bridge's address: where the controller's traffic comes from."""
        return str(self.subnet.network_address + 1)

    @property
    def key_path(self) -> Path:
        """Client private key (ed25519) authorised for root on every host."""
        return self.labdir / "client" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.labdir / "client" / "known_hosts"

    @property
    def control_path_dir(self) -> Path:
        """Where ssh keeps its ControlMaster sockets for the lab (short: unix socket paths are limited to 107 bytes)."""
        own = self.labdir / "cp"
        return own if len(str(own)) <= 56 else Path(tempfile.gettempdir()) / f"{self.prefix}-cp"

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no lab host {name!r}; hosts: {', '.join(h.name for h in self.hosts)}")

    def _resolve(self, host: LabHost | str) -> LabHost:
        return self.host(host) if isinstance(host, str) else host

    # ----------------------------------------------------------------- SSH / Ansible data

    def ssh_options(self) -> list[str]:
        """``-o`` options for the OpenSSH client (without the identity): strict host keys from the lab's known_hosts."""
        opts = {
            "UserKnownHostsFile": str(self.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes",
            "IdentitiesOnly": "yes",
            "BatchMode": "yes",
            "ConnectTimeout": "5",
            "ServerAliveInterval": "2",
            "ServerAliveCountMax": "3",
        }
        return [arg for k, v in opts.items() for arg in ("-o", f"{k}={v}")]

    @property
    def ssh_config(self) -> dict[str, Any]:
        """What a client needs: user, key, known_hosts, options, and the hosts' Python."""
        return {
            "user": "root",
            "port": SSH_PORT,
            "private_key_file": str(self.key_path),
            "known_hosts_file": str(self.known_hosts),
            "options": self.ssh_options(),
            "python_interpreter": self.python,
        }

    def ansible_host_vars(self, host: LabHost | str) -> dict[str, Any]:
        """Ansible connection variables for one host (ssh connection, strict host keys, fast timeouts)."""
        h = self._resolve(host)
        return {
            "ansible_host": h.address,
            "ansible_port": SSH_PORT,
            "ansible_user": "root",
            "ansible_connection": "ssh",
            "ansible_ssh_private_key_file": str(self.key_path),
            "ansible_ssh_common_args": shlex.join(self.ssh_options()),
            "ansible_ssh_timeout": 5,
            "ansible_ssh_retries": 0,
            "ansible_control_path_dir": str(self.control_path_dir),
            "ansible_pipelining": True,
            "ansible_python_interpreter": self.python,
            "ansible_remote_tmp": str(h.remote_tmp),
        }

    def ansible_inventory(
        self, group: str = "lab", extra_vars: dict[str, dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """An Ansible YAML/JSON inventory: every host in ``group`` with its connection vars and ``host_root``."""
        hosts: dict[str, Any] = {}
        for h in self.hosts:
            own = (extra_vars or {}).get(h.name, {})
            hosts[h.name] = {**self.ansible_host_vars(h), "host_root": str(h.root), **own}
        return {"all": {"children": {group: {"hosts": hosts}}}}

    def ansible_env(self) -> dict[str, str]:
        """The same connection settings as environment variables, for inventories that only name hosts.

        For code that generates its own Ansible inventory (e.g. sovkit's executor,
        whose inventory carries ``ansible_host``/``ansible_user``/``ansible_port``):
        pass these as ansible-runner ``envvars`` or set them in the environment.
        Host variables in the inventory take precedence over them.
        """
        return {
            "ANSIBLE_REMOTE_USER": "root",
            "ANSIBLE_PRIVATE_KEY_FILE": str(self.key_path),
            "ANSIBLE_SSH_COMMON_ARGS": shlex.join(self.ssh_options()),
            "ANSIBLE_TIMEOUT": "5",
            "ANSIBLE_SSH_RETRIES": "0",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control_path_dir),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_PYTHON_INTERPRETER": self.python,
        }

    def site_hosts(
        self, *, rack: str, cpu: str, arch: str = "aarch64", accelerators: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """``hosts:`` entries for a sovkit inventory (address, ``root``, ssh as root).

        Connect with :meth:`ansible_env` (key, known_hosts, interpreter).
        """
        return [
            {
                "name": h.name,
                "rack": rack,
                "address": h.address,
                "arch": arch,
                "cpu": cpu,
                "connection": "ssh",
                "ssh": {"user": "root", "port": SSH_PORT},
                "root": str(h.root),
                "accelerators": [dict(a) for a in accelerators or []],
            }
            for h in self.hosts
        ]

    def ssh(self, host: LabHost | str, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a shell command on a host over SSH (same client settings as Ansible)."""
        h = self._resolve(host)
        argv = ["ssh", "-i", str(self.key_path), *self.ssh_options(), "-p", str(SSH_PORT), f"root@{h.address}", command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    # ----------------------------------------------------------------- faults

    def link_down(self, host: LabHost | str) -> None:
        """Make a host unreachable: take its veth (bridge port) down. sshd keeps running."""
        _run("ip", "link", "set", self._resolve(host).veth, "down")

    def link_up(self, host: LabHost | str) -> None:
        h = self._resolve(host)
        _run("ip", "link", "set", h.veth, "up")
        _wait_for_port(h.address, None, h.sshd_log)

    def link_is_up(self, host: LabHost | str) -> bool:
        out = _run("ip", "-o", "link", "show", self._resolve(host).veth).stdout
        return bool(re.search(r"<[^>]*\bUP\b", out))

    # ----------------------------------------------------------------- a site behind a gateway

    def add_gateway(self) -> LabHost:
        """Put the lab behind a gateway, as a site whose hosts the central office cannot reach.

        The gateway is one more namespace with two legs: ``eth0`` on the lab bridge (the site network, address
        .2) and ``eth1`` on a point-to-point link to this machine (``10.78.X.0/30``, the office side, where its
        sshd listens). This machine's address on the bridge is removed and the site subnet routed to
        ``unreachable``, and the gateway does not forward: from here only the gateway answers, and the hosts
        only from the gateway (``ip netns exec GW ssh …``, which is what a worker on the gateway does).
        """
        if self.gateway_host is not None:
            return self.gateway_host
        sshd = find_sshd()
        assert sshd is not None
        third = int(self.subnet.network_address) >> 8 & 0xFF
        office = ipaddress.ip_network(f"10.78.{third}.0/30")
        gw = LabHost(name="gw", index=0, netns=f"{self.prefix}-gw", veth=f"{self.prefix}vg",
                     address=str(office.network_address + 2), root=self.labdir / "hosts" / "gw",
                     sshd_dir=self.labdir / "sshd" / "gw", remote_tmp=self.labdir / "remote-tmp" / "gw")
        office_link = f"{self.prefix}o"
        gw.root.mkdir(parents=True, exist_ok=True)
        gw.remote_tmp.mkdir(parents=True, exist_ok=True)
        _run("ip", "netns", "add", gw.netns)
        self._netns.append(gw.netns)
        _run("ip", "link", "add", gw.veth, "type", "veth", "peer", "name", "eth0", "netns", gw.netns)
        self._links.append(gw.veth)
        _run("ip", "link", "set", gw.veth, "master", self.bridge, "up")
        _run("ip", "link", "add", office_link, "type", "veth", "peer", "name", "eth1", "netns", gw.netns)
        self._links.append(office_link)
        _run("ip", "addr", "add", f"{office.network_address + 1}/30", "dev", office_link)
        _run("ip", "link", "set", office_link, "up")
        site_address = str(self.subnet.network_address + 2)
        _run("ip", "-n", gw.netns, "addr", "add", f"{site_address}/{self.subnet.prefixlen}", "dev", "eth0")
        _run("ip", "-n", gw.netns, "addr", "add", f"{gw.address}/30", "dev", "eth1")
        for dev in ("lo", "eth0", "eth1"):
            _run("ip", "-n", gw.netns, "link", "set", dev, "up")
        host_pub = _keygen(gw.sshd_dir / "ssh_host_ed25519_key", f"{self.prefix}-gw")
        with self.known_hosts.open("a", encoding="utf-8") as fh:
            fh.write(f"{gw.address} {' '.join(host_pub.split()[:2])}\n")
        self._procs["gw"] = _start_sshd(gw, self.labdir / "client" / "authorized_keys", sshd)
        self.gateway_host = gw
        # cut this machine off the site network
        _run("ip", "addr", "del", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        _run("ip", "route", "add", "unreachable", str(self.subnet))
        self._routes.append(str(self.subnet))
        self._save_manifest()
        _wait_for_port(gw.address, self._procs["gw"], gw.sshd_log)
        return gw

    def site_address(self) -> str:
        """The gateway's address on the site network (where the hosts see its connections from)."""
        return str(self.subnet.network_address + 2)

    # ----------------------------------------------------------------- teardown

    def manifest(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "subnet": str(self.subnet),
            "bridge": self.bridge,
            "hosts": [
                {"name": h.name, "netns": h.netns, "veth": h.veth, "address": h.address, "root": str(h.root)}
                for h in self.hosts
            ],
            "netns": list(self._netns),
            "links": list(self._links),
            "routes": list(self._routes),
            "sshd_pids": {name: p.pid for name, p in self._procs.items()},
            "systemd_pid1": dict(self._pid1),
            "cgroups": [str(c) for h in self.hosts if h.init == "systemd" for c in _cgroup_dirs(self.prefix, h.name)],
            "owner_pid": os.getpid(),
        }

    def _save_manifest(self) -> None:
        (self.labdir / "lab.json").write_text(json.dumps(self.manifest(), indent=2) + "\n", encoding="utf-8")

    def destroy(self) -> None:
        """Remove exactly what this lab created, by name. Safe to call more than once."""
        if self._destroyed:
            return
        errors: list[str] = []
        for pid in self._pid1.values():  # a PID namespace ends with its PID 1: systemd, sshd, every service
            _kill_pid1(pid)
        for proc in self._procs.values():
            _stop(proc)
        for ns in self._netns:
            _kill_netns_processes(ns)
            res = _run("ip", "netns", "del", ns, check=False)
            if res.returncode != 0 and "No such file" not in res.stderr:
                errors.append(res.stderr.strip())
        for route in self._routes:
            _run("ip", "route", "del", "unreachable", route, check=False)
        if self.control_path_dir != self.labdir / "cp":
            shutil.rmtree(self.control_path_dir, ignore_errors=True)
        for link in [*self._links, self.bridge]:
            res = _run("ip", "link", "del", link, check=False)
            if res.returncode != 0 and "Cannot find device" not in res.stderr and "does not exist" not in res.stderr:
                errors.append(res.stderr.strip())
        for h in self.hosts:
            if h.init == "systemd":
                _remove_cgroups(self.prefix, h.name)
        if errors:
            raise LabError("teardown incomplete: " + "; ".join(errors))
        self._destroyed = True

    def __enter__(self) -> HostLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


# --------------------------------------------------------------------------- helpers


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=5)


def _kill_netns_processes(ns: str) -> None:
    """SIGKILL every process living in namespace ``ns`` (sshd sessions, anything a test started there)."""
    res = _run("ip", "netns", "pids", ns, check=False)
    for word in res.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(word), signal.SIGKILL)


def _wait_for_port(address: str, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc is not None and proc.poll() is not None:
            detail = log.read_text(errors="replace") if log.exists() else ""
            raise LabError(f"sshd for {address} exited with {proc.returncode}: {detail.strip()}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            try:
                sock.connect((address, SSH_PORT))
                if sock.recv(4).startswith(b"SSH-"):
                    return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise LabError(f"sshd on {address}:{SSH_PORT} not reachable after {READY_TIMEOUT}s: {exc}") from exc
        if time.monotonic() > deadline:
            raise LabError(f"sshd on {address}:{SSH_PORT} not answering after {READY_TIMEOUT}s")
        time.sleep(0.1)


def _keygen(path: Path, comment: str) -> str:
    """Generate an ed25519 key pair at ``path``; return the public key line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    return path.with_name(path.name + ".pub").read_text(encoding="utf-8").strip()


def _sshd_config(h: LabHost, authorized_keys: Path) -> str:
    lines = {
        "Port": str(SSH_PORT),
        "ListenAddress": h.address,
        "AddressFamily": "inet",
        "HostKey": str(h.sshd_dir / "ssh_host_ed25519_key"),
        "PidFile": str(h.sshd_pidfile),
        "AuthorizedKeysFile": str(authorized_keys),
        "PermitRootLogin": "prohibit-password",
        "PubkeyAuthentication": "yes",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "UsePAM": "no",
        "StrictModes": "no",  # the lab directory lives under a world-writable /tmp
        "UseDNS": "no",
        "PrintMotd": "no",
        "X11Forwarding": "no",
        "MaxStartups": "100:30:200",
        "MaxSessions": "100",
        "LogLevel": "INFO",
        "Subsystem": "sftp internal-sftp",
    }
    return "".join(f"{k} {v}\n" for k, v in lines.items())


def _start_sshd(h: LabHost, authorized_keys: Path, sshd: str) -> subprocess.Popen[bytes]:
    """Write the host's sshd_config and start its sshd inside its namespace (foreground, logging to a file)."""
    config = h.sshd_dir / "sshd_config"
    config.write_text(_sshd_config(h, authorized_keys), encoding="utf-8")
    with open(h.sshd_dir / "sshd.stdout", "wb") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", h.netns, sshd, "-D", "-f", str(config), "-E", str(h.sshd_log)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


# --------------------------------------------------------------------------- systemd hosts

SYSTEMD = "/lib/systemd/systemd"
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: empty targets, so that a unit's default dependencies (sysinit, basic, shutdown) and sovkit's
#: After=/Wants=network-online.target, WantedBy=multi-user.target resolve to something that does nothing
_EMPTY_TARGETS = ("sysinit", "basic", "shutdown", "network", "network-online", "multi-user", "default")


def find_systemd() -> str | None:
    return SYSTEMD if os.access(SYSTEMD, os.X_OK) else None


def _cgroup_dirs(prefix: str, name: str) -> list[Path]:
    """The host's own cgroups: one per hierarchy systemd uses (named v1 ``systemd``, and cgroup2)."""
    return [CGROUP_ROOT / hier / f"{prefix}-{name}" for hier in ("systemd", "unified")
            if (CGROUP_ROOT / hier / "cgroup.procs").exists()]


def _rmdir_tree(path: Path) -> None:
    """Remove an (emptied) cgroup and its children, deepest first; cgroup dirs are removed with rmdir only."""
    if not path.is_dir():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def _remove_cgroups(prefix: str, name: str) -> None:
    for cg in _cgroup_dirs(prefix, name):
        deadline = time.monotonic() + 5
        while cg.exists() and time.monotonic() < deadline:  # the killed processes leave their cgroups late
            _rmdir_tree(cg)
            if cg.exists():
                time.sleep(0.05)


def _start_time_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _netns_name_of(pid: int) -> str:
    """The ``ip netns`` name whose namespace ``pid`` is in ('' when none is)."""
    try:
        ino = os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return ""
    for entry in Path("/run/netns").iterdir() if Path("/run/netns").is_dir() else ():
        with contextlib.suppress(OSError):
            if entry.stat().st_ino == ino:
                return entry.name
    return ""


def _kill_pid1(pid: int) -> None:
    """SIGKILL a PID namespace's init (as seen from here): the kernel then kills everything in that namespace."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _start_time_of(pid) is not None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return  # dead, waiting for its parent (unshare) to reap it
        time.sleep(0.05)


def _unit_files(h: LabHost, authorized_keys: Path, sshd: str) -> dict[str, str]:
    files = {f"{t}.target": f"[Unit]\nDescription={t} (empty on a sovkit lab host)\n" for t in _EMPTY_TARGETS}
    files["sovkit-lab.target"] = (
        "[Unit]\nDescription=sovkit host lab: what this host runs at boot\n"
        "Wants=sovkit-lab-sshd.service multi-user.target\n")
    files["sovkit-lab-sshd.service"] = (
        "[Unit]\nDescription=sshd of lab host {name}\nDefaultDependencies=no\n\n"
        "[Service]\nType=simple\nExecStart={sshd} -D -f {conf} -E {log}\nKillMode=process\n"
        .format(name=h.name, sshd=sshd, conf=h.sshd_dir / "sshd_config", log=h.sshd_log))
    return files


def _boot_script(h: LabHost, systemd: str) -> str:
    """What runs inside the new namespaces before systemd: a private /run, the host root's unit directory as
    /etc/systemd/system, then systemd with a unit path of lab directories only (never the OS's units)."""
    units, empty = h.systemd_dir / "units", h.systemd_dir / "empty"
    etc_units = h.root / "etc" / "systemd" / "system"
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "container": "sovkit-hostlab",  # container mode: no kernel command line, no hardware set-up
        "SYSTEMD_UNIT_PATH": f"{units}:/etc/systemd/system",  # no trailing ':': nothing of the OS's is added
        "SYSTEMD_GENERATOR_PATH": str(empty),
        "SYSTEMD_ENVIRONMENT_GENERATOR_PATH": str(empty),
        "SYSTEMD_LOG_TARGET": "console",
    }
    q = shlex.quote
    return "\n".join([
        "set -eu",
        "mount --make-rprivate /",
        "mount -t tmpfs -o mode=0755 sovkit-lab-run /run",
        "mkdir -p /run/sshd",
        f"mount --bind {q(str(etc_units))} /etc/systemd/system",
        # PID 1 writes its log (and, with the options below, its services' output) to /dev/console: make that
        # the host's log file rather than the machine's console
        f"mount --bind {q(str(h.systemd_dir / 'systemd.log'))} /dev/console",
        "exec env -i " + " ".join(q(f"{k}={v}") for k, v in env.items()) + f" {q(systemd)} --system"
        " --unit=sovkit-lab.target --log-target=console"
        " --default-standard-output=inherit --default-standard-error=inherit",
        "",
    ])


def _start_systemd(lab: HostLab, h: LabHost, authorized_keys: Path, sshd: str) -> subprocess.Popen[bytes]:
    """Boot a systemd as PID 1 of new PID/mount/UTS namespaces inside the host's network namespace, with the
    host's sshd as its unit; record its PID 1 so that teardown can kill it (and with it the namespace)."""
    systemd = find_systemd()
    assert systemd is not None
    config = h.sshd_dir / "sshd_config"
    config.write_text(_sshd_config(h, authorized_keys), encoding="utf-8")
    units = h.systemd_dir / "units"
    units.mkdir(parents=True, exist_ok=True)
    (h.systemd_dir / "empty").mkdir(exist_ok=True)
    (h.root / "etc" / "systemd" / "system").mkdir(parents=True, exist_ok=True)
    for fname, text in _unit_files(h, authorized_keys, sshd).items():
        (units / fname).write_text(text, encoding="utf-8")
    script = h.systemd_dir / "boot.sh"
    script.write_text(_boot_script(h, systemd), encoding="utf-8")
    cgroups = _cgroup_dirs(lab.prefix, h.name)
    for cg in cgroups:
        cg.mkdir(exist_ok=True)
    # each systemd owns a cgroup of its own (two would otherwise both manage the same system.slice/…): the
    # shell moves itself there, while it still sees the machine's /sys, then becomes the namespaced systemd
    argv = ["ip", "netns", "exec", h.netns, "unshare", "--pid", "--fork", "--kill-child", "--mount",
            "--mount-proc", "--uts", "--propagation", "private", "sh", str(script)]
    enter = "".join(f"echo $$ > {shlex.quote(str(cg / 'cgroup.procs'))} && " for cg in cgroups)
    with open(h.systemd_dir / "systemd.log", "wb") as out:
        proc = subprocess.Popen(
            ["sh", "-c", f"{enter}exec {shlex.join(argv)}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while True:  # the forked child of unshare is the namespace's PID 1
        children = _children_of(proc.pid)
        if children:
            lab._pid1[h.name] = children[0]
            return proc
        if proc.poll() is not None or time.monotonic() > deadline:
            log = (h.systemd_dir / "systemd.log").read_text(errors="replace")
            raise LabError(f"systemd for lab host {h.name} did not start: {log.strip()[-2000:]}")
        time.sleep(0.02)


def _children_of(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _choose_subnet() -> ipaddress.IPv4Network:
    used = _used_subnets()
    free = [s for s in LAB_NETWORK.subnets(new_prefix=24) if s not in used]
    if not free:
        raise LabError("no free /24 left in 10.77.0.0/16")
    return random.SystemRandom().choice(free)


def _new_prefix() -> str:
    existing = _existing_names()
    for _ in range(20):
        prefix = "skl" + secrets.token_hex(3)
        if prefix not in existing:
            return prefix
    raise LabError("could not find an unused lab prefix")


# --------------------------------------------------------------------------- build


def create_lab(n_hosts: int, labdir: Path, *, register_atexit: bool = True, init: str = "sshd") -> HostLab:
    """Build a lab of ``n_hosts`` hosts named ``h1``..``hN`` under ``labdir``; tear down on any failure.

    ``init="systemd"``: every host is systemd-managed (see the module docstring); ``"sshd"``: a bare sshd.
    """
    reason = unavailable_reason()
    if reason:
        raise LabError(reason)
    if init not in ("sshd", "systemd"):
        raise LabError(f"init is 'sshd' or 'systemd', not {init!r}")
    if init == "systemd" and find_systemd() is None:
        raise LabError(f"a systemd lab host needs {SYSTEMD} (Debian package systemd)")
    if not 1 <= n_hosts <= 200:
        raise LabError("a lab has between 1 and 200 hosts")
    sshd = find_sshd()
    assert sshd is not None
    labdir = Path(labdir).resolve()
    labdir.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)

    with _machine_lock():
        prefix = _new_prefix()
        subnet = _choose_subnet()
        lab = HostLab(labdir=labdir, prefix=prefix, subnet=subnet)
        if register_atexit:
            atexit.register(_quiet_destroy, lab)
        try:
            lab._save_manifest()
            _run("ip", "link", "add", lab.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{lab.gateway}/{subnet.prefixlen}", "dev", lab.bridge)
            _run("ip", "link", "set", lab.bridge, "up")
        except BaseException:
            _quiet_destroy(lab)
            raise
    try:
        _build_hosts(lab, n_hosts, sshd, init)
    except BaseException:
        _quiet_destroy(lab)
        raise
    return lab


def _build_hosts(lab: HostLab, n_hosts: int, sshd: str, init: str = "sshd") -> None:
    client_pub = _keygen(lab.key_path, f"sovkit-hostlab-{lab.prefix}")
    authorized = lab.labdir / "client" / "authorized_keys"
    authorized.write_text(client_pub + "\n", encoding="utf-8")
    lab.control_path_dir.mkdir(parents=True, exist_ok=True)
    known: list[str] = []
    for i in range(1, n_hosts + 1):
        name = f"h{i}"
        h = LabHost(
            name=name,
            index=i,
            netns=f"{lab.prefix}-{name}",
            veth=f"{lab.prefix}v{i}",
            address=str(lab.subnet.network_address + HOST_OFFSET + i),
            root=lab.labdir / "hosts" / name,
            sshd_dir=lab.labdir / "sshd" / name,
            remote_tmp=lab.labdir / "remote-tmp" / name,
            init=init,
        )
        lab.hosts.append(h)
        h.root.mkdir(parents=True, exist_ok=True)
        h.remote_tmp.mkdir(parents=True, exist_ok=True)
        _run("ip", "netns", "add", h.netns)
        lab._netns.append(h.netns)
        _run("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
        lab._links.append(h.veth)
        _run("ip", "link", "set", h.veth, "master", lab.bridge, "up")
        _run("ip", "-n", h.netns, "addr", "add", f"{h.address}/{lab.subnet.prefixlen}", "dev", "eth0")
        _run("ip", "-n", h.netns, "link", "set", "lo", "up")
        _run("ip", "-n", h.netns, "link", "set", "eth0", "up")
        host_pub = _keygen(h.sshd_dir / "ssh_host_ed25519_key", f"{lab.prefix}-{name}")
        known.append(f"{h.address} {' '.join(host_pub.split()[:2])}")
        if init == "systemd":
            lab._procs[name] = _start_systemd(lab, h, authorized, sshd)
        else:
            lab._procs[name] = _start_sshd(h, authorized, sshd)
        lab._save_manifest()
    lab.known_hosts.write_text("\n".join(known) + "\n", encoding="utf-8")
    for h in lab.hosts:
        _wait_for_port(h.address, lab._procs[h.name], h.sshd_log)


def _quiet_destroy(lab: HostLab) -> None:
    with contextlib.suppress(Exception):
        lab.destroy()


def destroy_from_manifest(labdir: Path) -> None:
    """Tear down a lab left behind by a killed process, from ``{labdir}/lab.json`` (names only ours)."""
    data = json.loads((Path(labdir) / "lab.json").read_text(encoding="utf-8"))
    prefix = data["prefix"]
    if not re.fullmatch(r"skl[0-9a-f]{6}", prefix):
        raise LabError(f"refusing to tear down {prefix!r}: not a host-lab prefix")
    # everything named with the lab's prefix: also what was created after the manifest was last saved
    listed = _run("ip", "netns", "list").stdout.split()
    for ns in sorted({*data["netns"], *(n for n in listed if n.startswith(prefix + "-"))}):
        if ns.startswith(prefix + "-"):
            _kill_netns_processes(ns)
            _run("ip", "netns", "del", ns, check=False)
    links = re.findall(r"^\d+: ([^:@\s]+)", _run("ip", "-o", "link", "show").stdout, flags=re.M)
    for link in sorted({*data["links"], data["bridge"], *(n for n in links if n.startswith(prefix))}):
        if link.startswith(prefix):
            _run("ip", "link", "del", link, check=False)
    for pid in data.get("systemd_pid1", {}).values():  # normally already gone with its network namespace
        if _start_time_of(pid) is not None and _netns_name_of(pid).startswith(prefix + "-"):
            _kill_pid1(pid)
    for cg in data.get("cgroups", []):
        path = Path(cg)
        if path.parent.parent == CGROUP_ROOT and path.name.startswith(prefix + "-"):
            _rmdir_tree(path)
    for route in data.get("routes", []):
        if ipaddress.ip_network(route).subnet_of(LAB_NETWORK):  # only a lab subnet's unreachable route
            _run("ip", "route", "del", "unreachable", route, check=False)
    shutil.rmtree(Path(tempfile.gettempdir()) / f"{prefix}-cp", ignore_errors=True)


# --------------------------------------------------------------------------- CLI


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.hostlab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build a lab and keep it until Ctrl-C")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--dir", type=Path, default=None)
    up.add_argument("--init", choices=("sshd", "systemd"), default="sshd",
                    help="systemd: each host's PID 1 is a real systemd running its sshd")
    down = sub.add_parser("down", help="tear down a lab left behind")
    down.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "down":
        destroy_from_manifest(args.dir)
        return 0
    labdir = args.dir or Path(tempfile.mkdtemp(prefix="sovkit-hostlab-"))

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    with create_lab(args.hosts, labdir, init=args.init) as lab:
        inv = labdir / "inventory.json"
        inv.write_text(json.dumps(lab.ansible_inventory(), indent=2) + "\n", encoding="utf-8")
        print(f"lab {lab.prefix} on {lab.subnet}: " + ", ".join(f"{h.name}={h.address}" for h in lab.hosts))
        print(f"ansible inventory: {inv}\nhost roots: {labdir / 'hosts'}\nCtrl-C to tear down", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_main(sys.argv[1:]))
    except LabError as exc:
        print(f"hostlab: {exc}", file=sys.stderr)
        sys.exit(1)
