"""The embedded engine: Rego evaluated in-process by regopy (rego-cpp). The only regopy importer.

regopy is imported on first use, not with this module: commands that evaluate no policy (validate, show …)
never load it. Its allocator (snmalloc) reserves a large address range when the library loads and aborts the
whole process ("Failed to initialise snmalloc", exit 134) under an address-space limit (``ulimit -v``); so
under such a limit the import is first tried in a child process, and a failure is a PolicyError saying why.

One interpreter per evaluation: the pack's modules and data, the whole input
document, one query of ``data.sovkit.main.decision`` (a batched evaluation:
every host and rule at once, never one query per host).
"""

from __future__ import annotations

import importlib
import json
import re
import resource
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

from sovkit.errors import PolicyError
from sovkit.policy.engine import DECISION_QUERY, Decision, decision_from_raw
from sovkit.policy.pack import PolicyPack

_UNDEFINED = object()
_ERROR_AT = re.compile(r"\(error \d+:([^|\s]+)\|(\d+)\|")
_ERROR_MSG = re.compile(r"\(errormsg \d+:([^\n]*?)\)?\n")


def _describe(error: str, sources: dict[str, str]) -> str:
    """rego-cpp reports errors as an AST dump; turn it into ``file:line: message`` lines."""
    lines = []
    for at, msg in zip(_ERROR_AT.finditer(error), _ERROR_MSG.finditer(error), strict=False):
        name, offset = at.group(1), int(at.group(2))
        line = sources[name][:offset].count("\n") + 1 if name in sources else None
        lines.append(f"{name}:{line}: {msg.group(1).strip()}" if line else f"{name}: {msg.group(1).strip()}")
    return "; ".join(dict.fromkeys(lines)) or error.strip()[:400]


@dataclass(frozen=True)
class RegoTestOutcome:
    passed: bool
    error: str | None = None


def _address_space_limit() -> int | None:
    """The soft RLIMIT_AS in bytes, or None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


@cache
def _regopy() -> ModuleType:
    """Import regopy, or raise PolicyError if it cannot start here (instead of the process aborting)."""
    limit = _address_space_limit()
    if limit is not None:
        try:
            probe = subprocess.run([sys.executable, "-c", "import regopy"], capture_output=True, timeout=120,
                                   check=False)
            failed = probe.returncode != 0
        except (OSError, subprocess.SubprocessError):
            failed = True
        if failed:
            raise PolicyError(
                f"the embedded policy engine (regopy) cannot start under the address-space limit of "
                f"{limit // 1024:,} KiB (ulimit -v): its allocator reserves a large address range at start and "
                "would abort the process",
                "raise the limit (`ulimit -v unlimited`), or evaluate the policy on an OPA server with "
                "--opa-url URL",
            )
    return importlib.import_module("regopy")


def _interpreter(modules: dict[str, str], data: dict[str, Any]) -> Any:
    regopy = _regopy()
    rego = regopy.Interpreter()
    rego.log_level = regopy.LogLevel.NONE  # errors come back as exceptions; keep stdout clean for --json
    for name, source in sorted(modules.items()):
        try:
            rego.add_module(name, source)
        except regopy.RegoError as exc:
            raise PolicyError(f"policy module {name} is malformed: {_describe(str(exc), modules)}",
                              "fix the Rego and run `sovkit policy test`") from exc
    try:
        rego.add_data_json(json.dumps(data))
    except regopy.RegoError as exc:
        raise PolicyError(f"policy data is malformed: {exc}", "fix data.json") from exc
    return rego


def _query(rego: Any, query: str, sources: dict[str, str], var: str = "x") -> Any:
    """Evaluate ``var := <query>``; returns _UNDEFINED when it has no value, raises PolicyError on error."""
    regopy = _regopy()
    try:
        out = rego.query(f"{var} := {query}")
    except regopy.RegoError as exc:
        raise PolicyError(f"policy evaluation failed: {_describe(str(exc), sources)}",
                          "a module in the pack is invalid; run `sovkit policy test`") from exc
    except ValueError as exc:  # regopy could not parse its own output as JSON
        raise PolicyError(f"policy evaluation returned an unreadable value: {exc}",
                          "a rule produced a value JSON cannot hold") from exc
    if not out.ok():
        try:
            from regopy.rego_shared import rego_get_error

            detail = rego_get_error(rego._impl)
        except Exception:  # the error text is only a courtesy; failing closed does not depend on it
            detail = "no detail available"
        raise PolicyError(f"policy evaluation failed: {_describe(detail, sources)}",
                          "fix the module named above (compile and runtime errors fail closed)")
    if len(out) == 0 or var not in out[0].bindings:
        return _UNDEFINED
    return out[0].bindings[var]


class _NotPlain(Exception):
    """A value the direct input builder does not take (an integer beyond 64 bits, a non-string key); the JSON
    path takes the document instead."""


def _input(doc: Any) -> Any:
    """The input document as a regopy Input, built node by node through rego-cpp's C API.

    10,000 hosts make a 12 MB document: rego-cpp parses it as a Rego term in ~10 s of CPU, regopy's own
    ``Input(value)`` takes ~5 s; this builder (the same C calls, without per-call buffers and re-encoding of
    repeated keys) ~3.5 s.
    """
    regopy = _regopy()
    from regopy import rego_shared

    lib = rego_shared.rego
    put_str, put_int, put_float = lib.regoInputString, lib.regoInputInt, lib.regoInputFloat
    put_bool, put_null, put_item = lib.regoInputBoolean, lib.regoInputNull, lib.regoInputObjectItem
    put_object, put_array = lib.regoInputObject, lib.regoInputArray
    handle = rego_shared.rego_new_input()
    encoded: dict[str, bytes] = {}

    def text(value: str) -> bytes:
        b = encoded.get(value)
        if b is None:
            # the inside of the JSON string, escaped as json.dumps writes it: rego-cpp keeps a string as its JSON
            # text, and this is the text its own parse of json.dumps(doc) keeps (sprintf %v shows it)
            b = encoded[value] = json.dumps(value)[1:-1].encode()
        return b

    def add(v: Any) -> None:
        t = type(v)
        if t is str:
            rc = put_str(handle, text(v))
        elif t is dict:
            for k, x in v.items():
                if type(k) is not str:
                    raise _NotPlain
                if put_str(handle, text(k)):
                    raise _NotPlain
                add(x)
                if put_item(handle):
                    raise _NotPlain
            rc = put_object(handle, len(v))
        elif t is list:
            for x in v:
                add(x)
            rc = put_array(handle, len(v))
        elif v is None:
            rc = put_null(handle)
        elif t is bool:
            rc = put_bool(handle, v)
        elif t is int and -(2**63) <= v < 2**63:
            rc = put_int(handle, v)
        elif t is float:
            rc = put_float(handle, v)
        else:
            raise _NotPlain
        if rc:
            raise _NotPlain

    holder = regopy.Input.__new__(regopy.Input)
    holder._impl = handle  # freed by Input.__del__, also when the build stops half way
    add(doc)
    return holder


def _set_input(rego: Any, doc: Any, direct: bool = True) -> None:
    try:
        if not direct:
            raise _NotPlain
        rego.set_input(_input(doc))
    except _NotPlain:
        rego.set_input_term(json.dumps(doc))


class EmbeddedEngine:
    """Default engine: no server, the same Rego semantics as OPA for the constructs the pack uses."""

    name = "embedded"

    def evaluate(self, pack: PolicyPack, input_doc: dict[str, Any]) -> Decision:
        rego = _interpreter(pack.modules, pack.data)
        try:
            _set_input(rego, input_doc)
        except _regopy().RegoError as exc:
            raise PolicyError(f"policy input rejected by the engine: {exc}") from exc
        raw = _query(rego, DECISION_QUERY, pack.modules)
        return decision_from_raw(None if raw is _UNDEFINED else raw, self.name, pack.digest)


def query_value(modules: dict[str, str], data: dict[str, Any], input_doc: Any, query: str,
                direct_input: bool = True) -> Any:
    """A bare query (benchmarks, tools); None when undefined. ``direct_input=False``: the input goes in as JSON
    text, rego-cpp's own parse (what the direct builder is tested against)."""
    rego = _interpreter(modules, data)
    _set_input(rego, input_doc, direct_input)
    raw = _query(rego, query, modules)
    return None if raw is _UNDEFINED else raw


def run_rego_tests(modules: dict[str, str], data: dict[str, Any], tests: dict[str, list[str]]
                   ) -> dict[tuple[str, str], RegoTestOutcome]:
    """Run each ``test_*`` rule (``{package: [rule, …]}``) like `opa test`: pass when it evaluates to true.

    rego-cpp compiles the whole module set on every query, so all tests run in one
    batched query; only if that fails is each test run alone to say which one errs.
    """
    rego = _interpreter(modules, data)
    rego.set_input_term("{}")
    names = [(pkg, rule) for pkg, rules in tests.items() for rule in rules]
    if not names:
        return {}
    batch = ", ".join(f'["{pkg}.{rule}" | data.{pkg}.{rule} == true]' for pkg, rule in names)
    try:
        passed = _query(rego, f"[{batch}]", modules)
    except PolicyError:
        passed = _UNDEFINED
    if isinstance(passed, list):
        ok = {item for group in passed for item in group}
        return {(pkg, rule): RegoTestOutcome(f"{pkg}.{rule}" in ok) for pkg, rule in names}
    results: dict[tuple[str, str], RegoTestOutcome] = {}
    for pkg, rule in names:
        try:
            value = _query(rego, f"data.{pkg}.{rule}", modules)
        except PolicyError as exc:
            results[(pkg, rule)] = RegoTestOutcome(False, exc.message)
            continue
        results[(pkg, rule)] = RegoTestOutcome(value is True)
    return results
