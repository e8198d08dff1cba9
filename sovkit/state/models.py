"""The state document. JSON, versioned, with Terraform's serial/lineage discipline.

``lineage`` is a UUID set when the state is first created and never changes;
``serial`` goes up by one on every write. A saved plan records both, so a plan
made against another state, or an older one, is refused.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StringConstraints,
    field_validator,
    model_serializer,
)

from sovkit import identifiers as ids

STATE_VERSION = 1


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _abs_path_or_empty(value: str) -> str:
    if value and not ids.safe_path(value):
        raise ValueError(f"{ids.describe(value)} is not a plain absolute path")
    return value


def _rel_path(value: str) -> str:
    if not ids.safe_path(value, absolute=False):
        raise ValueError(f"{ids.describe(value)} is not a plain relative path")
    return value


# Recorded values feed later Ansible runs (removal paths, observe targets): a tampered state.json must not be
# able to carry anything the inventory could not (sovkit/identifiers.py holds the patterns).
Name = Annotated[str, StringConstraints(pattern=ids.NAME)]
Version = Annotated[str, StringConstraints(pattern=ids.VERSION)]
Package = Annotated[str, StringConstraints(pattern=ids.PACKAGE)]
DeviceId = Annotated[str, StringConstraints(pattern=ids.DEVICE_ID)]
Sha256 = Annotated[str, StringConstraints(pattern=ids.SHA256)]
Sha256OrEmpty = Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{64})?$")]
FileDigest = Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{64}|missing)$")]
HostPath = Annotated[str, AfterValidator(_abs_path_or_empty)]
RelPath = Annotated[str, AfterValidator(_rel_path)]


class DeviceRecord(_M):
    kind: Name
    firmware: Version


class FirmwareRecord(_M):
    """Firmware installed on one accelerator kind of a host, read back from the devices."""

    kind: Name
    version: Version
    image_sha256: Sha256OrEmpty
    devices: dict[DeviceId, DeviceRecord] = {}
    power_limit_w: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="the power cap sovkit set and read back on every device (left out of the file "
        "when None, so states without caps are unchanged)")

    @model_serializer(mode="wrap")
    def _drop_no_cap(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("power_limit_w", 0) is None:
            data.pop("power_limit_w")
        return data


class DriverRecord(_M):
    """A kernel driver on a host: the loaded module's version as read back from ``/sys/module/MODULE/version``,
    and the inventory driver (package digests) that installed it."""

    module: Name
    version: Version
    driver: Name | None = Field(default=None, description="the inventory `drivers[]` entry that installed it "
                                "(None: found loaded, not installed by sovkit)")
    format: Literal["deb", "rpm", "runfile"] | None = None
    artifacts: dict[RelPath, Sha256] = Field(default_factory=dict, description="store path -> sha256")


class RuntimeRecord(_M):
    version: Version
    package: Package
    artifacts: dict[RelPath, Sha256] = Field(default_factory=dict, description="store path -> sha256")
    prefix: HostPath = ""
    format: Literal["wheelhouse", "deb"] = Field(default="wheelhouse", description="how it was installed (left out "
                                                 "of the file for wheelhouse, so older states are unchanged)")

    @model_serializer(mode="wrap")
    def _drop_default_format(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("format") == "wheelhouse":
            data.pop("format")
        return data


class ModelRecord(_M):
    version: Version
    files: dict[RelPath, FileDigest] = Field(default_factory=dict, description="relative file -> sha256")
    signature_verified: bool = False
    previous: Version | None = None
    path: HostPath = ""


def _endpoint(value: str) -> str:
    if value and not ids.matches(ids.ENDPOINT, value):
        raise ValueError(f"{ids.describe(value)} is not a plain http://address:port endpoint")
    return value


ServingStatus = Literal["installed", "started", "start-failed", "ready", "unhealthy", "stopped", "rolled-back"]


class ServingRecord(_M):
    """One serving process on a host (a deployment, or a serving group's router) and how it last answered.

    ``status``: ``started`` once apply (re)started it, ``ready`` when it passed readiness (and the smoke request,
    for the endpoint that takes traffic), ``unhealthy``/``start-failed`` when it did not, ``rolled-back`` when
    sovkit restored the previous config after a failed check, ``stopped`` when it is not running (observed, or
    stopped because there was nothing to roll back to). ``installed``: recorded before serving was started
    (states written by older sovkit versions).
    """

    role: Name
    model: Name
    model_version: Version
    runtime: Name
    runtime_version: Version
    config_sha256: Sha256OrEmpty
    port: Annotated[int, Field(ge=1, le=65535)]
    endpoint: Annotated[str, AfterValidator(_endpoint)] = ""
    status: ServingStatus = "installed"
    served_version: Version | None = Field(default=None, description="the model version the endpoint reports")
    ttft_ms: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        default=None, description="time to first token of the last smoke request, in ms")
    checked_at: str = ""
    detail: Annotated[str, StringConstraints(max_length=500)] = ""
    rundir: HostPath = Field(default="", description="the supervisor's run directory on the host (where its pid "
                             "file is), so a process is stopped there when the host's root moves")


# Record models of component kinds registered beyond the built-in fields (sovkit/components/registry.py fills
# this; state does not import components): kind name -> its record model.
_EXTRA_RECORDS: dict[str, type[BaseModel]] = {}


def register_record(kind: str, field: str, record: type[BaseModel]) -> None:
    """Called by the component registry: a kind without a HostRecord field keeps records in ``extra_kinds``."""
    if field not in HostRecord.model_fields:
        _EXTRA_RECORDS[kind] = record


def unregister_record(kind: str) -> None:
    _EXTRA_RECORDS.pop(kind, None)


class HostRecord(_M):
    firmware: dict[Name, FirmwareRecord] = Field(default_factory=dict, description="accelerator kind -> firmware")
    runtimes: dict[Name, RuntimeRecord] = {}
    models: dict[Name, ModelRecord] = {}
    serving: dict[Name, ServingRecord] = Field(default_factory=dict, description="deployment -> serving config")
    drivers: dict[Name, DriverRecord] = Field(default_factory=dict, description="kernel module -> driver (left out "
                                              "of the file while empty, so states without drivers are unchanged)")
    last_apply: str | None = None
    updated_at: str | None = None
    extra_kinds: dict[Name, dict[Name, Any]] = Field(
        default_factory=dict,
        description="records of component kinds registered beyond the built-in ones: kind -> name -> record "
                    "(left out of the file while empty, so the built-in format is unchanged)")

    @field_validator("extra_kinds")
    @classmethod
    def _known_kinds(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each kind's records validated by its own record model; a kind no registered module knows is refused
        (strict state: a record nobody can read is not carried along silently)."""
        out: dict[str, dict[str, Any]] = {}
        for kind, records in value.items():
            model = _EXTRA_RECORDS.get(kind)
            if model is None:
                raise ValueError(f"records of unknown component kind {ids.describe(kind)}")
            out[kind] = {n: r if isinstance(r, model) else model.model_validate(r) for n, r in records.items()}
        return out

    @model_serializer(mode="wrap")
    def _drop_empty_extra(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            if not data.get("drivers", True):
                data.pop("drivers")
            extra = {k: v for k, v in (data.pop("extra_kinds", None) or {}).items() if v}
            if extra:
                data["extra_kinds"] = extra
        return data


MAX_SERIAL = 2**53 - 1  # the largest integer every JSON reader keeps exact


class State(_M):
    version: int = Field(default=STATE_VERSION, ge=1, le=STATE_VERSION, strict=True,
                         description="State format version; a newer one is refused, not misread.")
    lineage: str = Field(default="", pattern=r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?$",
                         description="UUID set on the first write; empty before any state exists.")
    serial: int = Field(default=0, ge=0, le=MAX_SERIAL, strict=True,
                        description="Goes up by one on every write; a saved plan is bound to it.")
    site: str = ""
    hosts: dict[Name, HostRecord] = {}


class LockInfo(_M):
    """Who holds the state lock; shown when another run finds it taken."""

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    owner: str
    pid: int
    hostname: str
    operation: str
    created: str = Field(default_factory=now)


class HistoryEntry(_M):
    """One serial of a state as it was written: by whom, when, in which operation (the lock's) and run (the
    lock id the write was made under; empty for a write made without the lock), and the sha256 of the state's
    compact JSON. Not a copy of the state: an apply writes after every component, and copies of a 10,000-host
    state (20 MB) per write would fill any disk."""

    serial: int = Field(ge=1, le=MAX_SERIAL, strict=True)
    lineage: str
    who: str
    hostname: str
    at: str
    operation: str
    run: str = ""
    sha256: str = ""
