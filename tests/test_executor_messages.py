"""Failure messages from Ansible results: the words that explain the failure, not Ansible's summary."""

from __future__ import annotations

from typing import Any

import pytest

from sovkit.provision.ansible_executor import _message

CASES: list[tuple[str, dict[str, Any], str]] = [
    ("a failed command shows its stderr and exit code",
     {"msg": "non-zero return code", "rc": 1, "stderr": "rbln-smi: device 0: payload sha256 mismatch"},
     "rbln-smi: device 0: payload sha256 mismatch (exit 1)"),
    ("a loop reports its first failing item, not 'All items completed'",
     {"msg": "All items completed", "results": [
         {"changed": True, "rc": 0},
         {"failed": True, "msg": "non-zero return code", "rc": 2, "stderr": "I/O error\n"}]},
     "I/O error (exit 2)"),
    ("a loop item that lost its host",
     {"msg": "All items completed", "results": [
         {"unreachable": True, "msg": "Failed to connect to the host via ssh: Connection timed out"}]},
     "Failed to connect to the host via ssh: Connection timed out"),
    ("an assert keeps its own message", {"msg": "firmware image digest aa differs from the pinned bb",
                                         "assertion": "x"}, "firmware image digest aa differs from the pinned bb"),
    ("only stderr", {"stderr": "boom"}, "boom"),
]


@pytest.mark.parametrize(("name", "res", "expected"), CASES, ids=[c[0] for c in CASES])
def test_message(name: str, res: dict[str, Any], expected: str) -> None:
    assert _message(res) == expected
