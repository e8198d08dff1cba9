"""Strict patterns for every identifier that reaches a host: one place, shared by the inventory, the state and
the values hosts report back.

Why strict: these strings end up in Ansible variables, command lines and paths on the hosts. sovkit hands
them to Ansible as data that is never templated (see :mod:`sovkit.provision.ansible_executor`), and on top of
that refuses anything that is not a plain identifier, so a ``{{ … }}``, ``{% … %}``, a shell metacharacter
or a ``..`` path component is stopped at validation with a located error. Both layers, not one.

The patterns are plain strings (usable in pydantic ``StringConstraints(pattern=...)`` and JSON Schema);
``matches`` and ``safe_path`` are the checks for code. Nothing here imports the rest of sovkit.
"""

from __future__ import annotations

import re
from typing import Final

#: site, host, rack, model, runtime, deployment, publisher and vendor names; catalog ids
NAME: Final = r"^[a-z0-9][a-z0-9._-]{0,62}$"
#: versions (firmware, runtime, model); starts with a letter or digit, so never "." or ".."
VERSION: Final = r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$"
#: a Python package name (PEP 508 / PEP 503 spelling)
PACKAGE: Final = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$"
#: a POSIX login name (ssh user)
USER: Final = r"^[A-Za-z_][A-Za-z0-9._-]{0,31}$"
#: a device id as a vendor tool reports it (PCI address, index, serial)
DEVICE_ID: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
#: a PCI address in sysfs form, domain:bus:device.function (``0000:01:00.0``); vendor tools' other spellings
#: (nvidia-smi's 8-digit domain, upper case) are normalised to this before matching
BDF: Final = r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$"
#: a chip name as a vendor tool prints it (``RBLN-CA25``, ``rngd``, ``NVIDIA H100 80GB HBM3``)
CHIP_NAME: Final = r"^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,63}$"
#: a device index as a vendor tool numbers devices
DEVICE_INDEX: Final = r"^[0-9]{1,4}$"
#: a serving endpoint as sovkit records it: http, an address or host name, a port (no path, no credentials)
ENDPOINT: Final = r"^http://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253}):[0-9]{1,5}$"
#: a KV-transfer connector as the runtime names it (vLLM's ``NixlConnector``, SGLang's ``mooncake``): it becomes
#: a value in a launch argument, so letters, digits, ``_``, ``.`` and ``-`` only, starting with a letter
CONNECTOR: Final = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
#: a lowercase hex SHA-256 digest
SHA256: Final = r"^[0-9a-f]{64}$"
#: one path component character: letters, digits and ``. _ + @ , = ~ : -`` (no space, quote, brace, ``$``,
#: ``%``, ``;``, ``|``, ``&``, backquote, backslash or control character)
_PATH_CHAR: Final = r"[A-Za-z0-9._+@,=~:-]"
#: an absolute path on a host made of such components (``..`` components are refused by :func:`safe_path`)
ABS_PATH: Final = rf"^(/{_PATH_CHAR}+)+/?$|^/$"
#: a relative path (a file inside a model, an artifact in the store)
REL_PATH: Final = rf"^{_PATH_CHAR}+(/{_PATH_CHAR}+)*$"

#: the version sovkit records for a value a host reported that failed these patterns (never a real version:
#: the diff then plans the component again, and the finding is reported)
UNTRUSTED: Final = "untrusted"

_compiled: dict[str, re.Pattern[str]] = {}


def matches(pattern: str, value: object) -> bool:
    """True if ``value`` is a string that fully matches ``pattern`` (one of this module's constants)."""
    if not isinstance(value, str):
        return False
    rx = _compiled.get(pattern)
    if rx is None:
        rx = _compiled[pattern] = re.compile(pattern)
    return rx.fullmatch(value) is not None


def safe_path(value: object, absolute: bool = True) -> bool:
    """An absolute (or relative) path of plain components, none of them ``.`` or ``..``."""
    if not matches(ABS_PATH if absolute else REL_PATH, value):
        return False
    assert isinstance(value, str)
    return all(part not in (".", "..") for part in value.split("/"))


def within(path: str, prefix: str) -> bool:
    """``path`` is a safe absolute path equal to or below the safe absolute path ``prefix`` (textually)."""
    if not (safe_path(path) and safe_path(prefix)):
        return False
    base = prefix.rstrip("/")
    return path == base or path.startswith(base + "/")


def describe(value: object, limit: int = 80) -> str:
    """A value quoted for a message, cut short (a hostile host controls its length)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
