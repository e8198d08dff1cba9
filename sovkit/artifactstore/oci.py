"""A client for the OCI distribution API: push files as ORAS-style artifacts, pull blobs by digest.

Plain ``requests`` against the handful of endpoints needed (``/v2/``, blob HEAD/GET/upload, manifest GET/PUT):
requests is already a dependency, and owning the pull loop is what lets a blob be hashed while it is written and
refused before it can land anywhere. ORAS conventions: an image-spec 1.1 manifest with an ``artifactType``, the
empty config, one layer per file whose ``org.opencontainers.image.title`` annotation is the file's store path.

Authentication is the registry's own challenge: ``Basic`` answered with the credentials, ``Bearer`` by asking the
token realm with them (the distribution token flow Harbor uses). TLS is always verified, against the site's CA file
when one is given.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from sovkit.errors import SovkitError
from sovkit.signing.canonical import canonical_json

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.sovkit.artifacts.v1"
LAYER = "application/vnd.sovkit.file.v1"
EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"  # of b"{}"
TITLE = "org.opencontainers.image.title"
CHUNK = 1 << 20
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class RegistryError(SovkitError):
    """The registry cannot be used at all (down, TLS, credentials): nothing can be pulled or pushed."""


class BlobRefused(SovkitError):
    """One blob is missing or is not what its digest says: it is refused, the rest may go on."""


@dataclass(frozen=True)
class Credentials:
    """``user:password`` (basic, or exchanged for a bearer token) or a bare bearer token."""

    user: str | None
    secret: str

    @staticmethod
    def parse(text: str, source: str) -> Credentials:
        text = text.strip()
        if not text:
            raise RegistryError(f"the registry credentials in {source} are empty",
                                "put USER:PASSWORD (or a bearer token) there")
        if ":" in text:
            user, _, secret = text.partition(":")
            return Credentials(user, secret)
        return Credentials(None, text)

    @staticmethod
    def from_env(name: str) -> Credentials:
        value = os.environ.get(name)
        if value is None:
            raise RegistryError(f"the registry credentials variable ${name} is not set",
                                f"export {name}=USER:PASSWORD (or a bearer token) before running sovkit")
        return Credentials.parse(value, f"${name}")

    @staticmethod
    def from_file(path: Path) -> Credentials:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RegistryError(f"cannot read the registry credentials file {path}: {exc.strerror or exc}",
                                "create it holding USER:PASSWORD (or a bearer token) on one line") from None
        return Credentials.parse(text.splitlines()[0] if text.strip() else "", str(path))


def split_reference(url: str) -> tuple[str, str]:
    """``https://host[:port]/repo/path`` -> (base URL, repository)."""
    parts = urlsplit(url)
    repo = parts.path.strip("/")
    if parts.scheme != "https" or not parts.netloc or not repo:
        raise RegistryError(f"{url!r} is not an https registry URL with a repository",
                            "give it as https://HOST[:PORT]/REPOSITORY")
    return f"https://{parts.netloc}", repo


def _sha(digest: str) -> str:
    hexd = digest.removeprefix("sha256:")
    if not _HEX.match(hexd):
        raise BlobRefused(f"{digest!r} is not a sha256 digest")
    return hexd


class Registry:
    """One repository in one registry."""

    def __init__(self, url: str, repository: str, ca: Path | None = None,
                 credentials: Credentials | Callable[[], Credentials] | None = None, timeout: float = 30.0) -> None:
        if not _REPOSITORY.match(repository):
            raise RegistryError(f"{repository!r} is not a valid OCI repository name",
                                "lowercase letters, digits and . _ - separated by /")
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.netloc:
            raise RegistryError(f"registry URL {url!r} is not https://HOST[:PORT]", "sovkit only talks TLS to a "
                                "registry; give its https URL and the site's CA file")
        if ca is not None and not ca.is_file():
            raise RegistryError(f"the registry CA file {ca} does not exist", "point `ca:` at the site's CA (PEM)")
        self.base = f"https://{parts.netloc}"
        self.repository = repository
        self._credentials = credentials  # a callable is read at the first challenge (plan needs none)
        self.timeout = timeout
        self.session = requests.Session()
        self.session.verify = str(ca) if ca is not None else True
        self.session.trust_env = False  # the site's registry is reached directly, never through a proxy variable
        self._auth: str | None = None
        self.ca = ca

    @property
    def credentials(self) -> Credentials | None:
        if callable(self._credentials):
            self._credentials = self._credentials()
        return self._credentials

    # --- transport -----------------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base}/v2/{self.repository}/{path}" if path else f"{self.base}/v2/"

    def _send(self, method: str, url: str, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if self._auth:
            headers["Authorization"] = self._auth
        try:
            return self.session.request(method, url, headers=headers, timeout=self.timeout, **kw)
        except requests.exceptions.SSLError as exc:
            raise RegistryError(
                f"TLS to the registry {self.base} failed: {_reason(exc)}",
                "give the site's CA file as `ca:` (or --ca) and check the registry's certificate names this host"
                if self.ca is None else f"check that {self.ca} is the CA that signed the registry's certificate "
                "and that the certificate names this host") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise RegistryError(
                f"the registry {self.base} is not reachable: {_reason(exc)}",
                "start the registry (or fix artifact_store.url) and run again; nothing was installed") from None

    def _request(self, method: str, path_or_url: str, ok: tuple[int, ...] = (200,), **kw: Any) -> requests.Response:
        url = path_or_url if path_or_url.startswith("https://") else self._url(path_or_url)
        body = kw.get("data")
        r = self._send(method, url, **kw)
        if r.status_code == 401 and self._authenticate(r):
            rewind = getattr(body, "seek", None)
            if rewind is not None:
                rewind(0)
            r = self._send(method, url, **kw)
        if r.status_code == 401:
            r.close()
            who = f"user {self.credentials.user!r}" if self.credentials and self.credentials.user else "sovkit"
            raise RegistryError(
                f"the registry {self.base} refused {who} (401 Unauthorized)" if self.credentials else
                f"the registry {self.base} needs credentials (401 Unauthorized)",
                "check the password in the variable or file named by artifact_store.credentials" if self.credentials
                else "name an environment variable or file holding USER:PASSWORD in artifact_store.credentials")
        if r.status_code == 403:
            r.close()
            raise RegistryError(f"the registry {self.base} forbids this on {self.repository} (403)",
                                "give the account pull (and for import, push) rights on the repository")
        if r.status_code not in ok and r.status_code != 404:
            text = r.text[:200]
            r.close()
            raise RegistryError(f"the registry {self.base} answered {r.status_code} to {method} {url}: {text}",
                                "check the registry's log")
        return r

    def _authenticate(self, r: requests.Response) -> bool:
        """Answer a 401 challenge once; False when there is nothing new to try."""
        if self.credentials is None or self._auth is not None:
            return False
        challenge = r.headers.get("WWW-Authenticate", "")
        r.close()
        c = self.credentials
        if challenge.lower().startswith("basic") and c.user is not None:
            self._auth = "Basic " + base64.b64encode(f"{c.user}:{c.secret}".encode()).decode()
            return True
        if challenge.lower().startswith("bearer"):
            if c.user is None:
                self._auth = f"Bearer {c.secret}"
                return True
            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            realm = params.pop("realm", None)
            if realm is None:
                return False
            tr = self._send_plain(realm, params, (c.user, c.secret))
            if tr.status_code != 200:
                return False
            token = tr.json().get("token") or tr.json().get("access_token")
            if not token:
                return False
            self._auth = f"Bearer {token}"
            return True
        return False

    def _send_plain(self, url: str, params: dict[str, str], auth: tuple[str, str]) -> requests.Response:
        try:
            return self.session.get(url, params=params, auth=auth, timeout=self.timeout)
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"the registry's token service {url} is not reachable: {_reason(exc)}",
                                "check the registry's auth realm") from None

    # --- API -----------------------------------------------------------------------------------------------------

    def ping(self) -> None:
        """Reachable, TLS verified, credentials accepted."""
        self._request("GET", "").close()

    def has_blob(self, digest: str) -> bool:
        r = self._request("HEAD", f"blobs/sha256:{_sha(digest)}")
        r.close()
        return r.status_code == 200

    def push_blob(self, path: Path, digest: str) -> bool:
        """Upload ``path`` (whose sha256 is ``digest``) unless the repository has it; True when uploaded."""
        hexd = _sha(digest)
        if self.has_blob(hexd):
            return False
        r = self._request("POST", "blobs/uploads/", ok=(202,))
        if r.status_code != 202 or "Location" not in r.headers:
            raise RegistryError(f"the registry {self.base} did not start an upload ({r.status_code})",
                                "check that the account may push to the repository")
        location = urljoin(self._url(""), r.headers["Location"])
        sep = "&" if "?" in location else "?"
        with path.open("rb") as fh:
            put = self._request("PUT", f"{location}{sep}digest=sha256:{hexd}", ok=(201,), data=fh,
                                headers={"Content-Type": "application/octet-stream",
                                         "Content-Length": str(path.stat().st_size)})
        put.close()
        if put.status_code != 201:
            raise RegistryError(f"the registry {self.base} did not accept blob sha256:{hexd} ({put.status_code})",
                                "check the registry's log")
        return True

    def push_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if not self.has_blob(digest):
            r = self._request("POST", "blobs/uploads/", ok=(202,))
            location = urljoin(self._url(""), r.headers["Location"])
            sep = "&" if "?" in location else "?"
            self._request("PUT", f"{location}{sep}digest=sha256:{digest}", ok=(201,), data=data,
                          headers={"Content-Type": "application/octet-stream"}).close()
        return digest

    def manifest(self, reference: str) -> dict[str, Any] | None:
        r = self._request("GET", f"manifests/{reference}", headers={"Accept": MANIFEST})
        if r.status_code == 404:
            r.close()
            return None
        data = r.content
        if reference.startswith("sha256:") and hashlib.sha256(data).hexdigest() != _sha(reference):
            raise BlobRefused(f"the registry served a manifest that does not match {reference}")
        out: dict[str, Any] = json.loads(data)
        return out

    def put_manifest(self, reference: str, manifest: dict[str, Any]) -> str:
        body = canonical_json(manifest)
        self._request("PUT", f"manifests/{reference}", ok=(201,), data=body,
                      headers={"Content-Type": MANIFEST}).close()
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def pull_blob(self, digest: str, dest: Path, what: str) -> None:
        """Stream blob ``digest`` into ``dest``, hashing while writing; a blob whose bytes do not hash to the
        digest is deleted and refused, so ``dest`` only ever appears holding the right content."""
        hexd = _sha(digest)
        r = self._request("GET", f"blobs/sha256:{hexd}", stream=True)
        if r.status_code == 404:
            r.close()
            raise BlobRefused(f"{what} (sha256:{hexd[:16]}…) is not in the registry {self.base}/{self.repository}",
                              "push it with `sovkit bundle import BUNDLE --registry URL`")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
        h = hashlib.sha256()
        try:
            with r, tmp.open("wb") as out:
                for chunk in _chunks(r):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != hexd:
                raise BlobRefused(
                    f"the registry served {what} with sha256 {h.hexdigest()[:16]}…, not the pinned "
                    f"{hexd[:16]}…: refused, nothing was installed from it",
                    "the registry's storage (or something between it and sovkit) is corrupt or tampered with; "
                    "re-import the bundle with `sovkit bundle import --registry`")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)


def _chunks(r: requests.Response) -> Iterator[bytes]:
    try:
        yield from r.iter_content(CHUNK)
    except requests.exceptions.RequestException as exc:
        raise RegistryError(f"the registry connection broke during a download: {_reason(exc)}",
                            "run again; nothing was installed from the broken download") from None


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests error, without the wrapper noise."""
    text = str(exc)
    for pat in (r"\[SSL: [A-Z_]+\] ([^(]+)", r"(Connection refused)", r"(Name or service not known)",
                r"(timed out)", r"(certificate verify failed[^'\"]*)"):
        m = re.search(pat, text)
        if m:
            return m.group(1).strip()
    return text[:200]


def ensure_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise RegistryError(f"{tag!r} is not a valid OCI tag", "letters, digits and . _ - (128 at most)")
    return tag


def layer(title: str, digest: str, size: int, kind: str | None = None) -> dict[str, Any]:
    annotations = {TITLE: title}
    if kind:
        annotations["dev.sovkit.kind"] = kind
    return {"mediaType": LAYER, "digest": f"sha256:{_sha(digest)}", "size": size, "annotations": annotations}


def artifact_manifest(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """An ORAS-style artifact manifest (image-spec 1.1: artifactType and the empty config)."""
    return {"schemaVersion": 2, "mediaType": MANIFEST, "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": EMPTY, "digest": EMPTY_DIGEST, "size": 2},
            "layers": sorted(layers, key=lambda d: d["annotations"][TITLE])}


def titles(manifest: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{title: layer}`` of a manifest's layers that carry a title."""
    out: dict[str, dict[str, Any]] = {}
    for d in (manifest or {}).get("layers", []):
        t = (d.get("annotations") or {}).get(TITLE)
        if isinstance(t, str):
            out[t] = d
    return out
