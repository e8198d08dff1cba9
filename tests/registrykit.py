"""A real OCI registry for tests: Debian's docker-registry (distribution 2.8) on loopback, TLS from a test CA,
htpasswd (bcrypt) basic auth, its storage in a temp dir so a test can tamper with a blob on disk."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.sitefactory import free_ports

BINARY = "/usr/bin/docker-registry"
USER, PASSWORD = "sovkit", "test-password-not-secret"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca_and_server(d: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): a throwaway CA and a cert for 127.0.0.1/localhost signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("sovkit test CA")).issuer_name(_name("sovkit test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    d.mkdir(parents=True, exist_ok=True)
    ca_pem, srv_pem, srv_key = d / "ca.pem", d / "server.pem", d / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    srv_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    srv_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return ca_pem, srv_pem, srv_key


@dataclass
class LoopbackRegistry:
    root: Path
    port: int
    ca: Path
    proc: subprocess.Popen[bytes] | None = None
    access_log: bool = False  # the registry's access log (on its stdout) kept in ``access_log_file``

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def credentials(self) -> str:
        return f"{USER}:{PASSWORD}"

    def blob_file(self, digest: str) -> Path:
        hexd = digest.removeprefix("sha256:")
        return self.root / "data" / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    @property
    def access_log_file(self) -> Path:
        return self.root / "access.log"

    def start(self) -> None:
        out = self.access_log_file.open("ab") if self.access_log else subprocess.DEVNULL
        self.proc = subprocess.Popen([BINARY, "serve", str(self.root / "config.yml")], stdout=out,
                                     stderr=(self.root / "registry.log").open("wb"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("docker-registry exited: " + (self.root / "registry.log").read_text()[-2000:])
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not listen within 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def configure(root: Path, access_log: bool = False) -> LoopbackRegistry:
    """Write the registry's config, certs and htpasswd under ``root`` (not started)."""
    ca, cert, key = make_ca_and_server(root / "tls")
    port = free_ports(1)[0]
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (root / "htpasswd").write_text(f"{USER}:{hashed}\n")
    (root / "config.yml").write_text(f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: {"false" if access_log else "true"}
storage:
  filesystem:
    rootdirectory: {root / "data"}
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:{port}
  secret: sovkit-tests-only
  tls:
    certificate: {cert}
    key: {key}
auth:
  htpasswd:
    realm: sovkit-tests
    path: {root / "htpasswd"}
""")
    return LoopbackRegistry(root, port, ca, access_log=access_log)


@contextmanager
def running_registry(root: Path, access_log: bool = False) -> Iterator[LoopbackRegistry]:
    reg = configure(root, access_log)
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()
