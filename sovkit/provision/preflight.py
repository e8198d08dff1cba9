"""Controller-side checks before anything reaches a host: artifact digests and publisher/vendor signatures.

Fail closed: a host that needs an artifact whose digest or signature does not
verify is not provisioned at all; the other hosts go ahead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sovkit.artifactstore import ArtifactStore, BlobRefused, open_store
from sovkit.components import registry
from sovkit.components.base import ArtifactCheck
from sovkit.components.host import DesiredHost
from sovkit.inventory.loader import LoadedInventory
from sovkit.plan.model import Plan
from sovkit.signing.artifacts import Claim, SignatureCheck, verify_artifact_signature
from sovkit.signing.model_signature import common_dir, verify_model


@dataclass
class Preflight:
    failed_hosts: dict[str, str] = field(default_factory=dict)
    signatures: dict[str, SignatureCheck] = field(default_factory=dict)


class _Checker:
    def __init__(self, inv: LoadedInventory, port: ArtifactStore) -> None:
        self.inv = inv
        self.port = port
        self.store = port.root
        self.digests: dict[str, str | None] = {}
        self.refused: dict[str, str] = {}
        self.trust = inv.trust_roots()

    def prefetch(self, wanted: dict[str, str | None]) -> None:
        """Get every file the plan needs at once (a registry pulls them concurrently)."""
        got = self.port.fetch_many({p: d for p, d in wanted.items()
                                    if p not in self.digests and p not in self.refused})
        for p, res in got.items():
            if isinstance(res, BlobRefused):
                self.refused[p] = res.message
            else:
                self.digests[p] = res.sha256 if res is not None else None

    def _fetch(self, store_path: str, pinned: str | None) -> None:
        """Get the file onto the controller (a registry store pulls it by digest); a refused blob is a problem of
        the hosts needing it, a store that cannot be used at all (RegistryError) stops the whole run."""
        if store_path in self.digests or store_path in self.refused:
            return
        try:
            got = self.port.fetch(store_path, pinned)
        except BlobRefused as exc:
            self.refused[store_path] = exc.message
            return
        self.digests[store_path] = got.sha256 if got is not None else None

    def digest_problem(self, store_path: str, pinned: str) -> str | None:
        self._fetch(store_path, pinned)
        if store_path in self.refused:
            return self.refused[store_path]
        actual = self.digests[store_path]
        if actual is None:
            return f"artifact {store_path} is missing from {self.port.describe()}"
        if actual != pinned:
            return f"artifact {store_path} has sha256 {actual[:16]}…, the inventory pins {pinned[:16]}…"
        return None

    def signature(self, signature: str | None, files: dict[str, str], section: str, signer: str | None,
                  claim: Claim, fmt: str = "dsse") -> SignatureCheck:
        """The signature's check, then its signer judged at its signing time (window, revocation)."""
        return self.trust.judge(section, self._signature(signature, files, section, signer, claim, fmt))

    def _signature(self, signature: str | None, files: dict[str, str], section: str, signer: str | None,
                   claim: Claim, fmt: str = "dsse") -> SignatureCheck:
        if signature is None or signer is None:
            return SignatureCheck(False, None, signer or "", "no signature declared")
        key = self.trust.key(section, signer)
        key_path = self.trust.path(section, signer)
        if key is None or key_path is None:
            return SignatureCheck(False, None, signer, f"no usable trusted key for {signer!r}")
        self._fetch(signature, None)
        if signature in self.refused:
            return SignatureCheck(False, key.keyid, signer, self.refused[signature])
        if fmt == "model-signing":
            # OpenSSF Model Signing names files relative to the model directory (the files' common parent)
            paths = [self.store / p for p in files]
            root = common_dir(paths)
            pinned = {(self.store / p).relative_to(root).as_posix(): d for p, d in files.items()}
            result = verify_model(paths, self.store / signature, key_path,
                                  pinned=pinned, signer=signer, claim=claim)
            return SignatureCheck(result.verified, result.keyid, signer, result.reason, result.signed_at)
        if fmt != "dsse":
            return SignatureCheck(False, key.keyid, signer, f"unknown signature format {fmt!r}")
        return verify_artifact_signature(self.store / signature, files, key, signer, claim)


def run_preflight(inv: LoadedInventory, desired: dict[str, DesiredHost], plan: Plan) -> Preflight:
    """Verify every artifact the plan installs (what each kind's ``preflight`` names); hosts needing a bad one
    are marked failed. A registry store pulls each file by digest first; one that cannot be reached raises
    :class:`RegistryError` before anything runs."""
    out = Preflight()
    checker = _Checker(inv, open_store(inv))
    specs: list[tuple[str, ArtifactCheck]] = []
    for change in plan.changes:
        if change.action == "delete" or change.host not in desired:
            continue
        kind = registry.find(change.component)
        want = kind.desired_of(desired[change.host]).get(change.name) if kind else None
        spec = kind.preflight(want) if kind is not None and want is not None else None
        if spec is not None:
            specs.append((change.host, spec))
    wanted: dict[str, str | None] = {}
    for _host, spec in specs:
        wanted.update(spec.files)
        if spec.signature is not None and spec.signer is not None:
            wanted.setdefault(spec.signature, None)
    checker.prefetch(wanted)
    for host, spec in specs:
        if host in out.failed_hosts:
            continue
        problem: str | None = None
        for path, pinned in spec.files.items():
            problem = problem or checker.digest_problem(path, pinned)
        label = spec.label
        if problem is None and label not in out.signatures:
            out.signatures[label] = checker.signature(spec.signature, spec.files, spec.section, spec.signer,
                                                      spec.claim, spec.fmt)
        check = out.signatures.get(label)
        if problem is None and check is not None and not check.verified:
            problem = f"{label}: signature by {check.signer or 'unknown'} does not verify ({check.reason})"
        if problem is not None:
            out.failed_hosts[host] = problem
    return out
