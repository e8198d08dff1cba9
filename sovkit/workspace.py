"""A site's workspace: the inventory, its state directory, and the adapters wired once.

Every operation runs against a Workspace: the state store, the executor, the policy engine and the
signer are chosen here (from an inventory path and options), so the library never constructs an
adapter itself and a test can hand in fakes (``sovkit.fakes``) in one place.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from sovkit.attest import log as attest_log
from sovkit.errors import StateError
from sovkit.inventory import LoadedInventory, load_inventory
from sovkit.policy.engine import PolicyEngine
from sovkit.policy.pack import PolicyPack
from sovkit.provision.executor import Executor
from sovkit.signing.keys import Signer
from sovkit.state.store import LocalStateStore, StateStore

SIGNING_KEY_ENV = "SOVKIT_SIGNING_KEY"
STATE_URL_ENV = "SOVKIT_STATE_URL"


def state_url_for(inventory: LoadedInventory, state_url: str | None = None) -> str | None:
    """The site's state database: ``state_url`` (``--state-url``), else ``$SOVKIT_STATE_URL``, else the
    inventory's ``state:`` (a PostgreSQL URL or the variable holding it); None: the local directory."""
    url = state_url or os.environ.get(STATE_URL_ENV) or None
    config = inventory.site.state
    if url is None and config.backend == "postgres":
        url = config.url
        if config.url_env is not None:
            url = os.environ.get(config.url_env)
            if not url:
                raise StateError(f"the inventory keeps the state in PostgreSQL at ${config.url_env}, which is not set",
                                 f"export {config.url_env}=postgresql://USER@HOST/DB (password in PGPASSWORD or a "
                                 "passfile), or pass --state-url")
    return url


def open_state_store(inventory: LoadedInventory, directory: Path, state_url: str | None = None,
                     lock_timeout: float = 0.0) -> StateStore:
    """The site's state store (``state_url_for``): PostgreSQL when a URL is found, else the local directory."""
    url = state_url_for(inventory, state_url)
    if url is None:
        return LocalStateStore(directory, lock_timeout)
    from sovkit.state.postgres import PostgresStateStore  # psycopg only when a database is used

    return PostgresStateStore(url, inventory.site.metadata.name, lock_timeout)


@dataclass
class Workspace:
    """Where sovkit keeps a site's local state (``.sovkit/`` beside the inventory unless told otherwise),
    and the adapters every operation on it uses."""

    inventory: LoadedInventory
    directory: Path
    state_store: StateStore | None = None
    executor_adapter: Executor | None = field(default=None, repr=False)
    policy_engine: PolicyEngine | None = None
    signer: Signer | None = field(default=None, repr=False)
    #: a directory of extra Rego and data added to the shipped pack, or a verified policy bundle's pack used
    #: instead of it (``--policy-bundle``)
    extra_policies: Path | PolicyPack | None = field(default=None, repr=False)
    lock_timeout: float = 0.0

    def __post_init__(self) -> None:
        if self.state_store is None:
            self.state_store = LocalStateStore(self.directory)

    @classmethod
    def open(cls, inventory: Path | str, state_dir: Path | None = None, *, executor: Executor | None = None,
             state_store: StateStore | None = None, policy_engine: PolicyEngine | None = None,
             signer: Signer | None = None, extra_policies: Path | PolicyPack | None = None,
             check_files: bool = True, state_url: str | None = None, lock_timeout: float = 0.0) -> Workspace:
        """Load and check the inventory, and wire the adapters (real ones for what is not passed)."""
        loaded = load_inventory(inventory, check_files=check_files)
        directory = (state_dir or loaded.root / ".sovkit").resolve()
        if state_store is None:
            state_store = open_state_store(loaded, directory, state_url, lock_timeout)
        return cls(loaded, directory, state_store, executor, policy_engine, signer, extra_policies, lock_timeout)

    def using(self, *, executor: Executor | None = None, signer: Signer | None = None,
              policy_engine: PolicyEngine | None = None) -> Workspace:
        """The same workspace with some adapters swapped (e.g. a rollback run by another executor)."""
        return dataclasses.replace(
            self, executor_adapter=executor or self.executor_adapter, signer=signer or self.signer,
            policy_engine=policy_engine or self.policy_engine)

    @property
    def store(self) -> StateStore:
        assert self.state_store is not None  # set in __post_init__
        return self.state_store

    @property
    def executor(self) -> Executor:
        """The executor that runs playbooks: Ansible (ansible-runner) unless another was wired in."""
        if self.executor_adapter is None:
            self.executor_adapter = ansible_executor()
        return self.executor_adapter

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    @property
    def attestations(self) -> Path:
        """The append-only attestation log directory."""
        return attest_log.log_dir_for(self.directory)

    @property
    def runs(self) -> Path:
        path = self.directory / "runs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def signing_key_path(self, key: Path | None = None) -> Path:
        """The operator key: ``key``, else ``$SOVKIT_SIGNING_KEY``, else ``<state dir>/keys/operator.key``."""
        if key is not None:
            return key
        env = os.environ.get(SIGNING_KEY_ENV)
        return Path(env) if env else self.directory / "keys" / "operator.key"


def ansible_executor() -> Executor:
    """The real executor (ansible-runner), imported late: the one place it is constructed."""
    from sovkit.provision.ansible_executor import AnsibleRunnerExecutor

    return AnsibleRunnerExecutor()
