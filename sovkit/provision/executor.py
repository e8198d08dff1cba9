"""The Executor port: run a playbook on hosts and stream events back.

The apply logic depends only on this Protocol; the ansible-runner executor is
the production implementation. Events are plain data so the state writer,
progress display and attestation builder can consume them without Ansible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

#: keys of the debug messages that carry results back to sovkit as "record" events (apply and rollback
#: records, observe.yml's observation, probe.yml's serving probes, fleet.yml's signed site summary)
RECORD_KEYS = frozenset({"sovkit_record", "sovkit_observed", "sovkit_probed", "sovkit_fleet"})

EventKind = Literal["task", "ok", "failed", "unreachable", "record", "host_done"]


@dataclass(frozen=True)
class ExecEvent:
    kind: EventKind
    host: str
    task: str = ""
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class HostOutcome:
    ok: int = 0
    changed: int = 0
    failed: bool = False
    unreachable: bool = False
    error: str = ""
    failed_task: str = ""


@dataclass
class RunResult:
    run_id: str
    rc: int
    hosts: dict[str, HostOutcome]
    cancelled: bool = False


@dataclass(frozen=True)
class HostTarget:
    """A host as the executor sees it: Ansible connection vars plus sovkit_* variables."""

    name: str
    connection_vars: dict[str, Any]
    variables: dict[str, Any]


class Executor(Protocol):
    def run(
        self,
        playbook: str,
        targets: list[HostTarget],
        on_event: Callable[[ExecEvent], None],
        workdir: Path,
        cancel: Callable[[], bool] = lambda: False,
        run_id: str | None = None,
        forks: int | None = None,
    ) -> RunResult: ...
