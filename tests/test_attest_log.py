"""The attestation log: append, read back, verify; concurrent appends keep one unbroken chain."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from sovkit.attest import log as alog
from sovkit.attest.predicates import (
    POLICY_DECISION_PREDICATE,
    PolicyDecisionPredicate,
    policy_decision_statement,
)
from sovkit.signing.keys import LocalSigner
from sovkit.signing.statement import Statement, Subject


def _statement(i: int) -> Statement:
    return Statement(subject=[Subject(name=f"file-{i}", digest={"sha256": f"{i:064x}"})],
                     predicateType="https://example.test/p/v1", predicate={"i": i})


def test_append_read_verify_roundtrip(tmp_path: Path) -> None:
    signer = LocalSigner.from_seed(b"op")
    first = alog.append(tmp_path, [_statement(0), _statement(1)], signer)
    second = alog.append(tmp_path, [_statement(2)], signer)
    assert [e.index for e in first + second] == [0, 1, 2]
    assert first[0].previous is None and first[1].previous == first[0].digest
    assert second[0].previous == first[1].digest
    entries = alog.read_log(tmp_path)
    assert [e.digest for e in entries] == [e.digest for e in first + second]
    assert entries[2].statement["predicate"] == {"i": 2}
    assert entries[2].predicate_type == "https://example.test/p/v1"
    lines = (tmp_path / "log.jsonl").read_bytes().split(b"\n")[:-1]
    assert set(json.loads(lines[0])) == {"index", "previous", "envelope", "signed_at"}
    result = alog.verify_log(tmp_path, [signer.public_key])
    assert result.ok, [s.detail for s in result.steps]
    assert [s.name for s in result.steps] == list(alog.STEPS)


def test_policy_decision_statement_shape(tmp_path: Path) -> None:
    pred = PolicyDecisionPredicate(operation="plan", site="s", inventory_digest="ab" * 32, pack_digest="cd" * 32,
                                   allowed=True, findings=[{"id": "x", "waived": True}], time="t")
    st = policy_decision_statement(pred)
    alog.append(tmp_path, [st], LocalSigner.from_seed(b"op"))
    (entry,) = alog.read_log(tmp_path)
    assert entry.predicate_type == POLICY_DECISION_PREDICATE
    assert entry.subjects == [{"name": "inventory:s", "digest": {"sha256": "ab" * 32}}]
    assert entry.predicate["findings"] == [{"id": "x", "waived": True}]


def test_empty_and_missing_log(tmp_path: Path) -> None:
    assert alog.read_log(tmp_path / "nope") == []
    assert alog.append(tmp_path, [], LocalSigner.from_seed(b"op")) == []
    result = alog.verify_log(tmp_path / "nope", [LocalSigner.from_seed(b"op").public_key])
    assert not result.ok and result.steps[0].name == "envelope-format"
    assert "no attestation log" in result.steps[0].detail


def _worker(args: tuple[str, int]) -> None:
    directory, n = args
    signer = LocalSigner.from_seed(b"op")
    for i in range(n):
        alog.append(Path(directory), [_statement(i)], signer)


@pytest.mark.parametrize("procs", [4])
def test_concurrent_appends_keep_one_chain(tmp_path: Path, procs: int) -> None:
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        pool.map(_worker, [(str(tmp_path), 10)] * procs)
    result = alog.verify_log(tmp_path, [LocalSigner.from_seed(b"op").public_key])
    assert result.ok, [s.detail for s in result.steps]
    assert len(result.entries) == 10 * procs
