"""The ordered registry of component kinds that plan, provision, attest and audit iterate.

Built-in kinds register here; a test (or a later package) adds one with :func:`register` or, for the
span of a ``with`` block, :func:`registered`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sovkit.components.base import ComponentKind
from sovkit.components.driver import Driver
from sovkit.components.firmware import Firmware
from sovkit.components.model import Model
from sovkit.components.runtime import Runtime
from sovkit.components.serving import Serving
from sovkit.state.models import register_record, unregister_record

_KINDS: dict[str, ComponentKind] = {}
HOST_ORDER = 1_000  # the pseudo-component "host" (a host dropped from the inventory) sorts after every kind


def register(kind: ComponentKind) -> None:
    """Add a kind; its name must be new. A kind outside HostRecord's fields gets its records validated by its
    ``record`` model in HostRecord's ``extra_kinds`` map."""
    if kind.name in _KINDS or kind.name == "host":
        raise ValueError(f"component kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    register_record(kind.name, kind.field, kind.record)


def unregister(name: str) -> None:
    _KINDS.pop(name, None)
    unregister_record(name)


@contextmanager
def registered(kind: ComponentKind) -> Iterator[ComponentKind]:
    register(kind)
    try:
        yield kind
    finally:
        unregister(kind.name)


def kinds() -> list[ComponentKind]:
    """Every kind in plan order (driver → firmware → runtime → model → serving → …)."""
    return sorted(_KINDS.values(), key=lambda k: k.order)


def find(name: str) -> ComponentKind | None:
    return _KINDS.get(name)


def get(name: str) -> ComponentKind:
    kind = _KINDS.get(name)
    if kind is None:
        raise KeyError(f"unknown component kind {name!r}")
    return kind


def order(component: str) -> int:
    """Where changes of ``component`` sort on a host."""
    return HOST_ORDER if component == "host" else get(component).order


for _kind in (Driver(), Firmware(), Runtime(), Model(), Serving()):
    register(_kind)
