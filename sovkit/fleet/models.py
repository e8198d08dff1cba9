"""The fleet file: which sites, where their inventories live on their gateways, how to reach each gateway.

The controller (the central office) reads only this file. Paths under ``sites[].inventory``, ``state_dir`` and
``signing_key`` are on the site's gateway; ``key`` and the gateway's ``ssh_key``/``known_hosts`` are on the
controller (relative to the fleet file). Every value that ends up in the SSH command line or on the gateway has
a strict pattern: nothing from this file is ever run through a shell unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from sovkit import identifiers as ids
from sovkit.errors import FleetError
from sovkit.inventory.yamlsource import SourceMap, YamlInputError, read_yaml

Name = Annotated[str, StringConstraints(pattern=ids.NAME)]
User = Annotated[str, StringConstraints(pattern=ids.USER)]
#: an IPv4/IPv6 address or a DNS name (no user@, no port, no option-looking leading dash)
Address = Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[?[0-9A-Fa-f:.]{2,45}\]?)$")]


def _gateway_path(value: str) -> str:
    if not ids.safe_path(value):
        raise ValueError(f"{ids.describe(value)} is not a plain absolute path on the gateway")
    return value


def _key_ref(value: str) -> str:
    if value.startswith("pkcs11:"):
        if not ids.matches(r"^pkcs11:[A-Za-z0-9._%;=/?&:+-]{1,1024}$", value):
            raise ValueError(f"{ids.describe(value)} is not a plain pkcs11: URI")
        return value
    return _gateway_path(value)


GatewayPath = Annotated[str, AfterValidator(_gateway_path)]
KeyRef = Annotated[str, AfterValidator(_key_ref)]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Gateway(_M):
    """An execution node inside the site: the only machine of the site the controller connects to."""

    address: Address
    user: User = "root"
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    ssh_key: str = Field(description="controller-side private key file for the gateway (relative to the fleet file)")
    known_hosts: str = Field(description="controller-side known_hosts with the gateway's host key (strict checking)")
    python: GatewayPath = Field(default="/usr/bin/python3",
                                description="the gateway's Python with sovkit and ansible-runner installed")


class FleetSite(_M):
    name: Name = Field(description="the site's name: must equal metadata.name of its inventory")
    inventory: GatewayPath = Field(description="the site's inventory on its gateway")
    state_dir: GatewayPath | None = Field(default=None, description="state directory on the gateway (default: "
                                                                     ".sovkit/ beside the inventory)")
    signing_key: KeyRef | None = Field(default=None, description="the site's operator key on the gateway (a file "
                                                                 "or a pkcs11: URI); default: the state directory's")
    key: str = Field(description="controller-side public key the site's signed summaries must verify with")
    gateway: Gateway


class FleetMeta(_M):
    name: Name


class Fleet(_M):
    api_version: Literal["sovkit.dev/v1"] = Field(alias="apiVersion")
    kind: Literal["Fleet"]
    metadata: FleetMeta
    parallel: Annotated[int, Field(ge=1, le=256)] = Field(default=4, description="sites worked on at once")
    sites: Annotated[list[FleetSite], Field(min_length=1)]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)

    @model_validator(mode="after")
    def _unique(self) -> Fleet:
        seen: set[str] = set()
        for s in self.sites:
            if s.name in seen:
                raise ValueError(f"site {s.name!r} is listed twice")
            seen.add(s.name)
        return self


@dataclass(frozen=True)
class LoadedFleet:
    fleet: Fleet
    path: Path

    def local(self, rel: str) -> Path:
        """A controller-side path from the fleet file (relative to its directory)."""
        p = Path(rel)
        return p if p.is_absolute() else self.path.parent / p


def load_fleet(path: Path) -> LoadedFleet:
    """Read and validate a fleet file; one FleetError naming ``file:line`` and the field for the first problem."""
    smap = SourceMap()
    try:
        data = read_yaml(path, smap)
    except YamlInputError as exc:
        raise FleetError(f"fleet file {exc.problem.render()}", exc.problem.hint or "fix the fleet file") from None
    try:
        fleet = Fleet.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        mark = smap.find(loc)
        where = f"{mark.file}:{mark.line}" if mark else str(path)
        field = ".".join(map(str, loc)) or "(top)"
        raise FleetError(f"{where}: {field}: {first['msg']}",
                         "see docs/fleet.md for the fleet file's fields") from None
    loaded = LoadedFleet(fleet, path)
    for site in fleet.sites:
        for what, rel in (("key", site.key), ("gateway.ssh_key", site.gateway.ssh_key),
                          ("gateway.known_hosts", site.gateway.known_hosts)):
            if not loaded.local(rel).is_file():
                raise FleetError(f"{path}: site {site.name}: {what} {rel} not found (looked in "
                                 f"{loaded.local(rel)})", "paths in the fleet file are relative to it")
    return loaded
