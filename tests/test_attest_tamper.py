"""Every kind of tampering with the attestation log is caught, each with its own message."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sovkit import api
from sovkit.attest import log as alog
from sovkit.attest.predicates import PROVISION_PREDICATE
from sovkit.signing.keys import LocalSigner, write_keypair
from sovkit.signing.statement import Statement, Subject
from sovkit.state.models import HostRecord, RuntimeRecord, State
from sovkit.state.store import LocalStateStore
from tests.conftest import CliResult

OPERATOR = LocalSigner.from_seed(b"operator")
STRANGER = LocalSigner.from_seed(b"stranger")
HOSTS = [f"h{i}" for i in range(5)]


@dataclass
class Rig:
    state_dir: Path
    store: Path

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "attestations"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "log.jsonl"

    def lines(self) -> list[bytes]:
        return self.log_file.read_bytes().split(b"\n")[:-1]

    def write_lines(self, lines: list[bytes]) -> None:
        self.log_file.write_bytes(b"".join(line + b"\n" for line in lines))

    def verify(self, keys: list[LocalSigner] | None = None) -> alog.LogVerification:
        state = LocalStateStore(self.state_dir).read()
        target = api.AttestationTarget(self.log_dir, state, self.store)
        return api.verify_attestations(target=target, keys=[k.public_key for k in (keys or [OPERATOR])])


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    """Five hosts, each with one runtime artifact in the store, attested and recorded in the state."""
    store = tmp_path / "store"
    state = State(site="lab")
    statements = []
    for host in HOSTS:
        f = store / "runtime" / f"{host}.whl"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(f"wheel for {host}".encode())
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        rel = f"runtime/{host}.whl"
        state.hosts[host] = HostRecord(runtimes={"rt": RuntimeRecord(version="1", package="rt",
                                                                     artifacts={rel: digest})})
        statements.append(Statement(subject=[Subject(name=rel, digest={"sha256": digest})],
                                    predicateType=PROVISION_PREDICATE,
                                    predicate={"host": host, "outcome": "success", "site": "lab"}))
    state_dir = tmp_path / ".sovkit"
    LocalStateStore(state_dir).write(state)
    alog.append(state_dir / "attestations", statements[:3], OPERATOR)
    alog.append(state_dir / "attestations", statements[3:], OPERATOR)
    r = Rig(state_dir, store)
    assert r.verify().ok
    return r


def _edit_envelope(line: bytes, edit: Callable[[dict[str, object]], None]) -> bytes:
    obj = json.loads(line)
    edit(obj["envelope"])
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def flip_payload(r: Rig) -> None:
    lines = r.lines()

    def edit(env: dict[str, object]) -> None:
        payload = bytearray(base64.b64decode(str(env["payload"])))
        at = payload.index(b'"h2"') + 2
        payload[at] ^= 0x01  # "h2" -> "h3": still a valid statement, now lying
        env["payload"] = base64.b64encode(bytes(payload)).decode()

    lines[2] = _edit_envelope(lines[2], edit)
    r.write_lines(lines)


def flip_signature(r: Rig) -> None:
    lines = r.lines()

    def edit(env: dict[str, object]) -> None:
        sigs = env["signatures"]
        assert isinstance(sigs, list)
        raw = bytearray(base64.b64decode(sigs[0]["sig"]))
        raw[10] ^= 0x01
        sigs[0]["sig"] = base64.b64encode(bytes(raw)).decode()

    lines[2] = _edit_envelope(lines[2], edit)
    r.write_lines(lines)


def change_subject_file(r: Rig) -> None:
    (r.store / "runtime" / "h1.whl").write_bytes(b"a different wheel")


def drop_entry(r: Rig) -> None:
    lines = r.lines()
    del lines[2]
    r.write_lines(lines)


def insert_copy(r: Rig) -> None:
    lines = r.lines()
    lines.insert(2, lines[1])
    r.write_lines(lines)


def insert_renumbered(r: Rig) -> None:
    """Insert a copy of a validly signed entry and renumber everything after it, as a careful forger would."""
    lines = r.lines()
    lines.insert(2, lines[1])
    for pos in range(2, len(lines)):
        obj = json.loads(lines[pos])
        obj["index"] = pos
        lines[pos] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    r.write_lines(lines)


def reorder(r: Rig) -> None:
    lines = r.lines()
    lines[2], lines[3] = lines[3], lines[2]
    r.write_lines(lines)


def truncate_tail(r: Rig) -> None:
    r.write_lines(r.lines()[:-1])


def unknown_key_append(r: Rig) -> None:
    st = Statement(subject=[Subject(name="x", digest={"sha256": "0" * 64})], predicateType="https://e.test/v1")
    alog.append(r.log_dir, [st], STRANGER)


CASES: list[tuple[str, Callable[[Rig], None], list[LocalSigner] | None, str, str]] = [
    ("payload", flip_payload, None, "signature", "the statement was altered"),
    ("signature", flip_signature, None, "signature", "the signature bytes were altered"),
    ("subject-file", change_subject_file, None, "subjects", "subject runtime/h1.whl of host h1"),
    ("dropped", drop_entry, None, "chain", "entry 2 is missing from the log: an entry was dropped"),
    ("inserted", insert_copy, None, "chain", "appears twice (lines 2 and 3): an entry was inserted"),
    ("inserted-renumbered", insert_renumbered, None, "chain", "were inserted"),
    ("reordered", reorder, None, "chain", "entry index 3 is at line 3, where entry 2 belongs: entries were "
                                          "reordered"),
    ("truncated", truncate_tail, None, "head", "the log was truncated: the signed head names entry 4 but the "
                                               "log ends at entry 3"),
    ("wrong-key", lambda r: None, [STRANGER], "keyid", "wrong key: none of the given keys"),
    ("unknown-key", unknown_key_append, None, "keyid", "entry 5 (line 6) is signed by an unknown key"),
]


@pytest.mark.parametrize(("name", "tamper", "keys", "step", "message"), CASES, ids=[c[0] for c in CASES])
def test_tampering_is_caught_at_its_step(rig: Rig, name: str, tamper: Callable[[Rig], None],
                                         keys: list[LocalSigner] | None, step: str, message: str) -> None:
    tamper(rig)
    result = rig.verify(keys)
    assert not result.ok
    failed = {s.name: s for s in result.steps if s.failed}
    assert step in failed, [(s.name, s.detail) for s in result.steps]
    assert message in failed[step].detail
    assert failed[step].error().step == step and failed[step].hint


def test_each_case_has_its_own_message(tmp_path: Path) -> None:
    first_messages = []
    for n, (_, tamper, keys, step, _) in enumerate(CASES):
        sub = tmp_path / str(n)
        sub.mkdir()
        r = rig.__wrapped__(sub)  # type: ignore[attr-defined]
        tamper(r)
        result = r.verify(keys)
        first_messages.append(next(s.detail for s in result.steps if s.name == step and s.failed))
    assert len(set(first_messages)) == len(CASES), first_messages


def test_untampered_head_envelope_edit_is_caught(rig: Rig) -> None:
    head = json.loads((rig.log_dir / "head.json").read_text())
    body = json.loads(base64.b64decode(head["payload"]))
    body["index"] = 3
    head["payload"] = base64.b64encode(json.dumps(body).encode()).decode()
    (rig.log_dir / "head.json").write_text(json.dumps(head))
    result = rig.verify()
    assert "head.json" in result.step("head").detail and "signature does not verify" in result.step("head").detail


def test_deleted_head_and_torn_line(rig: Rig) -> None:
    (rig.log_dir / "head.json").unlink()
    assert "head.json is missing" in rig.verify().step("head").detail
    rig.log_file.write_bytes(rig.log_file.read_bytes()[:-20])
    result = rig.verify()
    assert result.steps[0].name == "envelope-format" and "last line is incomplete" in result.steps[0].detail
    with pytest.raises(Exception, match="refusing to append"):
        alog.append(rig.log_dir, [Statement(subject=[], predicateType="x")], OPERATOR)


def test_cli_reports_tampering_without_traceback(rig: Rig, cli: Callable[..., CliResult], tmp_path: Path) -> None:
    pub = tmp_path / "op.key"
    write_keypair(OPERATOR, pub, None)
    ok = cli("attest", "verify", rig.state_dir, "--key", f"{pub}.pub")
    assert ok.code == 0, ok.text
    reorder(rig)
    bad = cli("attest", "verify", rig.state_dir, "--key", f"{pub}.pub")
    assert bad.code == 1
    assert "FAILED" in bad.out and "chain continuity" in bad.out
    assert "failed at step chain continuity: entry index 3 is at line 3" in bad.err
    assert "Traceback" not in bad.err
    missing = cli("attest", "verify", rig.state_dir)
    assert missing.code == 1 and "--key" in missing.err
