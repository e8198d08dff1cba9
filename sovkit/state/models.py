"""The state document. JSON, versioned, with Terraform's serial/lineage discipline.

``lineage`` is a UUID set when the state is first created and never changes;
``serial`` goes up by one on every write. A saved plan records both, so a plan
made against another state, or an older one, is refused.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

STATE_VERSION = 1


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceRecord(_M):
    kind: str
    firmware: str


class FirmwareRecord(_M):
    """Firmware installed on one accelerator kind of a host, read back from the devices."""

    kind: str
    version: str
    image_sha256: str
    devices: dict[str, DeviceRecord] = {}


class RuntimeRecord(_M):
    version: str
    package: str
    artifacts: dict[str, str] = Field(default_factory=dict, description="store path -> sha256")
    prefix: str = ""


class ModelRecord(_M):
    version: str
    files: dict[str, str] = Field(default_factory=dict, description="relative file -> sha256")
    signature_verified: bool = False
    previous: str | None = None
    path: str = ""


class ServingRecord(_M):
    role: str
    model: str
    model_version: str
    runtime: str
    runtime_version: str
    config_sha256: str
    port: int


class HostRecord(_M):
    firmware: dict[str, FirmwareRecord] = Field(default_factory=dict, description="accelerator kind -> firmware")
    runtimes: dict[str, RuntimeRecord] = {}
    models: dict[str, ModelRecord] = {}
    serving: dict[str, ServingRecord] = Field(default_factory=dict, description="deployment -> serving config")
    last_apply: str | None = None
    updated_at: str | None = None


MAX_SERIAL = 2**53 - 1  # the largest integer every JSON reader keeps exact


class State(_M):
    version: int = Field(default=STATE_VERSION, ge=1, le=STATE_VERSION, strict=True,
                         description="State format version; a newer one is refused, not misread.")
    lineage: str = Field(default="", pattern=r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?$",
                         description="UUID set on the first write; empty before any state exists.")
    serial: int = Field(default=0, ge=0, le=MAX_SERIAL, strict=True,
                        description="Goes up by one on every write; a saved plan is bound to it.")
    site: str = ""
    hosts: dict[str, HostRecord] = {}


class LockInfo(_M):
    """Who holds the state lock; shown when another run finds it taken."""

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    owner: str
    pid: int
    hostname: str
    operation: str
    created: str = Field(default_factory=now)
