"""Find the data that ships with sovkit: the Rego policy pack and the templates.

In a built wheel they live in ``sovkit/_data/``; in a source checkout (editable
install, tests) they are the top-level ``policies/`` and ``templates/``.
"""

from __future__ import annotations

from pathlib import Path

from sovkit.errors import SovkitError

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Path of a shipped data directory (``policies`` or ``templates``)."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise SovkitError(
        f"sovkit's {name}/ directory is missing from the installation",
        "reinstall sovkit from its wheel or source checkout",
    )


def policies_dir() -> Path:
    return data_dir("policies")


def templates_dir() -> Path:
    return data_dir("templates")
