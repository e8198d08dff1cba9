"""Verifying 10,000 attestations: sovkit's full log verification vs a bare `cryptography` verify loop.

The bare loop only checks the signatures (PAE bytes and raw signatures prepared outside the timer);
sovkit's verification also parses every line, validates every envelope and statement, checks key
ids, the hash chain and the signed head. Prints the ratio per key algorithm (goal <= 1.5x) and the
peak RSS. Run: ``python bench/attest_bench.py [N]``.
"""

from __future__ import annotations

import base64
import resource
import sys
import tempfile
import time
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from sovkit.attest import log as alog
from sovkit.attest.predicates import PROVISION_PREDICATE
from sovkit.signing import dsse
from sovkit.signing.keys import Algorithm, LocalSigner
from sovkit.signing.statement import Statement, Subject


def _statements(n: int) -> list[Statement]:
    return [
        Statement(
            subject=[Subject(name=f"models/m/{i}/model-{j}.safetensors", digest={"sha256": f"{i * 7 + j:064x}"})
                     for j in range(4)],
            predicateType=PROVISION_PREDICATE,
            predicate={"host": f"npu-node-{i % 64}", "site": "bench", "outcome": "success", "run_id": f"apply-{i}",
                       "devices": [{"kind": "rebellions-atom-max", "device": str(d), "firmware": "1.2.0"}
                                   for d in range(4)]},
        )
        for i in range(n)
    ]


def _bare(entries: list[alog.LogEntry], key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey) -> float:
    prepared = [(base64.b64decode(e.envelope.signatures[0].sig),
                 dsse.pae(e.envelope.payload_type, e.envelope.payload_bytes())) for e in entries]
    start = time.perf_counter()
    for sig, msg in prepared:
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(sig, msg)
            else:
                key.verify(sig, msg, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise SystemExit("bare verify failed") from exc
    return time.perf_counter() - start


def run(n: int, alg: Algorithm, repeat: int = 5) -> tuple[float, float]:
    """Best of ``repeat`` for each side, the two sides interleaved so load changes hit both alike."""
    signer = LocalSigner.generate(alg)
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        alog.append(log_dir, _statements(n), signer)
        keys = [signer.public_key]

        def sovkit_verify() -> float:
            start = time.perf_counter()
            result = alog.verify_log(log_dir, keys)
            elapsed = time.perf_counter() - start
            if not result.ok or len(result.entries) != n:
                raise SystemExit(f"verification failed: {[s.detail for s in result.steps if s.failed]}")
            return elapsed

        entries = alog.read_log(log_dir)
        bare, ours = [], []
        for _ in range(repeat):
            bare.append(_bare(entries, signer.public_key.key))
            ours.append(sovkit_verify())
    return min(ours), min(bare)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(f"verifying {n} attestations (best of 5 each, interleaved; ratio = sovkit full log verification / "
          "bare cryptography verify loop)")
    for alg in ("ed25519", "ecdsa-p256"):
        ours, bare = run(n, alg)  # type: ignore[arg-type]
        print(f"  {alg:<11} ratio {ours / bare:.2f}x  (goal <= 1.5x)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
