r"""How one deployment's server is started: a runtime profile plus validated values -> argv and environment.

Pure (no I/O). The profile's ``{placeholders}`` are replaced by plain strings in one pass: no template
engine, no shell, and a value that happens to contain ``{port}`` is never substituted again. The argv is
then handed to systemd (``systemd_unit``, quoted by systemd's own rules) or to sovkit's supervisor
(``supervisor_spec``, an argv list that is exec'd as is).

systemd rules used (systemd.service "Command lines", systemd.exec ``Environment=``, systemd.unit specifiers):
``%`` specifiers are expanded everywhere, even inside quotes (write ``%%``); ExecStart= expands ``$FOO`` and
``${FOO}`` at exec time, even inside quotes (write ``$$``), Environment= does not ("``$`` has no special
meaning"); double-quoted words take C escapes (``\\``, ``\"``, ``\n``, ``\xNN``); an unquoted lone ``;``
separates commands. Every word is quoted, so none of that can split or expand a value.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sovkit import identifiers as ids
from sovkit.catalog import PLACEHOLDER_RE, RuntimeProfile
from sovkit.errors import PlanError
from sovkit.inventory.models import Address


def _abs_path(value: str) -> str:
    if not ids.safe_path(value):
        raise ValueError(f"{ids.describe(value)} is not a plain absolute path")
    return value


AbsPath = Annotated[str, AfterValidator(_abs_path)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KvTransferInput(_M):
    """The serving group's KV transfer as this deployment sees it."""

    connector: Annotated[str, Field(pattern=ids.CONNECTOR)]
    #: the decode host's address (vLLM ``kv_ip``): where the decode side listens for KV
    peer_host: Address
    #: the decode side's KV listener port (vLLM ``kv_port``)
    port: Port


class SpeculativeInput(_M):
    method: Literal["draft_model", "eagle", "eagle3", "ngram", "mtp"] = "draft_model"
    draft_model_path: AbsPath
    num_tokens: int = Field(default=4, ge=1, le=64)


class LaunchInput(_M):
    """Everything a profile's placeholders are filled from; every value is validated before it is used."""

    python: AbsPath
    runtime_prefix: AbsPath
    runtime_bin: AbsPath
    model_path: AbsPath
    served_model_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    bind: Address
    port: Port
    tp: int = Field(ge=1)
    max_model_len: int = Field(ge=1)
    max_batch: int = Field(ge=1)
    #: accelerator indexes on the host, one per tensor-parallel rank
    devices: list[Annotated[int, Field(ge=0)]]
    role: Literal["prefill", "decode", "both"] = "both"
    kv: KvTransferInput | None = None
    speculative: SpeculativeInput | None = None

    @model_validator(mode="after")
    def _consistent(self) -> LaunchInput:
        if len(self.devices) != self.tp:
            raise ValueError(f"{len(self.devices)} devices given for tensor parallel {self.tp}")
        if len(set(self.devices)) != len(self.devices):
            raise ValueError("a device index is given twice")
        if (self.role == "both") != (self.kv is None):
            raise ValueError("a prefill or decode deployment needs its KV transfer, a plain one has none")
        return self


class Launch(_M):
    argv: list[str]
    env: dict[str, str]


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def kv_transfer_config(inp: LaunchInput) -> dict[str, Any]:
    """vLLM's ``--kv-transfer-config`` for a prefill (producer, rank 0) or decode (consumer, rank 1) [V]."""
    assert inp.kv is not None and inp.role != "both"
    prefill = inp.role == "prefill"
    return {"kv_connector": inp.kv.connector, "kv_role": "kv_producer" if prefill else "kv_consumer",
            "kv_rank": 0 if prefill else 1, "kv_parallel_size": 2, "kv_ip": inp.kv.peer_host,
            "kv_port": inp.kv.port}


def speculative_config(inp: LaunchInput, method: str) -> dict[str, Any]:
    """vLLM's ``--speculative-config`` [V]; n-gram speculation proposes from the prompt, so it names no model."""
    assert inp.speculative is not None
    out: dict[str, Any] = {"method": method}
    if inp.speculative.method != "ngram":
        out["model"] = inp.speculative.draft_model_path
    out["num_speculative_tokens"] = inp.speculative.num_tokens
    return out


def _values(profile: RuntimeProfile, inp: LaunchInput) -> dict[str, str]:
    values = {
        "python": inp.python, "runtime_prefix": inp.runtime_prefix, "runtime_bin": inp.runtime_bin,
        "model_path": inp.model_path, "served_model_name": inp.served_model_name, "bind": inp.bind,
        "port": str(inp.port), "tp": str(inp.tp), "max_model_len": str(inp.max_model_len),
        "max_batch": str(inp.max_batch), "devices_csv": ",".join(str(d) for d in inp.devices),
        "npu_devices": ",".join(f"npu:{d}" for d in inp.devices),
    }
    if inp.kv is not None and inp.role != "both":
        values.update({
            "kv_role": profile.disaggregation.roles[inp.role], "kv_rank": "0" if inp.role == "prefill" else "1",
            "kv_connector": inp.kv.connector, "kv_peer_host": inp.kv.peer_host, "kv_port": str(inp.kv.port),
            "kv_transfer_config": _json(kv_transfer_config(inp)), "pd_mode": inp.role,
        })
    if inp.speculative is not None:
        method = profile.speculative.methods[inp.speculative.method]
        values.update({
            "speculative_config": _json(speculative_config(inp, method)),
            "draft_model_path": inp.speculative.draft_model_path,
            "spec_tokens": str(inp.speculative.num_tokens), "spec_method": method,
        })
    return values


def _fill(text: str, values: dict[str, str], profile: RuntimeProfile) -> str:
    def one(match: Any) -> str:
        name = match.group(1)
        if name not in values:  # the catalog check makes this unreachable for shipped profiles
            raise PlanError(f"runtime profile {profile.id}: {{{name}}} has no value here", "reinstall sovkit")
        return values[name]

    return PLACEHOLDER_RE.sub(one, text)


def render_launch(profile: RuntimeProfile, inp: LaunchInput) -> Launch:
    """The argv and environment that start ``inp``'s server with ``profile``'s runtime.

    Refused (PlanError) when the profile cannot do what is asked: P/D, that connector, speculative
    decoding or that speculative method. Policy (SV-003) reports these first; this is the last line.
    """
    d, s = profile.disaggregation, profile.speculative
    if inp.kv is not None:
        if not d.supported:
            raise PlanError(f"runtime {profile.id} does not serve prefill and decode apart",
                            "use a plain deployment (role both) or a runtime that supports P/D")
        if inp.kv.connector not in d.connectors:
            raise PlanError(f"runtime {profile.id} has no KV connector {inp.kv.connector!r}",
                            f"use one of: {', '.join(d.connectors)}")
    if inp.speculative is not None and inp.speculative.method not in s.methods:
        raise PlanError(f"runtime {profile.id} does not do speculative decoding with method "
                        f"{inp.speculative.method!r}",
                        f"use one of: {', '.join(s.methods)}" if s.methods else "remove speculative")
    values = _values(profile, inp)
    parts = list(profile.launch)
    env = list(profile.env)
    if inp.kv is not None:
        parts += d.args + (d.prefill_args if inp.role == "prefill" else d.decode_args)
        env += d.env
    if inp.speculative is not None:
        parts += s.args
    argv = [_fill(arg, values, profile) for part in parts for arg in part.args]
    return Launch(argv=argv, env={var.name: _fill(var.value, values, profile) for var in env})


# --- systemd ---------------------------------------------------------------------------------------------

_NEEDS_ESCAPE = re.compile(r'[\\"\x00-\x1f\x7f]')


def _c_escape(value: str) -> str:
    """Backslash, double quote and control characters as systemd's C escapes (systemd.syntax, quoting)."""
    if not _NEEDS_ESCAPE.search(value):  # the usual case, and a hot one on big sites: nothing to escape
        return value
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def exec_arg(value: str) -> str:
    """One ExecStart= word: double-quoted, C-escaped, ``%`` doubled (specifiers are expanded even inside
    quotes) and ``$`` doubled (``$FOO``/``${FOO}`` are expanded at exec time even inside quotes)."""
    return '"' + _c_escape(value).replace("%", "%%").replace("$", "$$") + '"'


def environment_assignment(name: str, value: str) -> str:
    """One Environment= assignment, quoted as a whole; ``%`` doubled, ``$`` left alone (not expanded there)."""
    return '"' + _c_escape(f"{name}={value}").replace("%", "%%") + '"'


def _one_line(value: str, what: str) -> str:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise PlanError(f"{what} {ids.describe(value)} has a control character", "use plain text")
    return value.replace("%", "%%")


def systemd_unit(launch: Launch, description: str, *, workdir: str) -> str:
    """A systemd service unit that runs ``launch``; every value quoted by systemd's rules, never by a shell."""
    if not launch.argv or not ids.safe_path(launch.argv[0]):
        raise PlanError("the program to start must be a plain absolute path",
                        f"got {ids.describe(launch.argv[0] if launch.argv else '')}")
    if not ids.safe_path(workdir):
        raise PlanError(f"working directory {ids.describe(workdir)} is not a plain absolute path")
    lines = [
        "# Rendered by sovkit — do not edit on the host; change the inventory and apply.",
        "[Unit]",
        f"Description={_one_line(description, 'description')}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"WorkingDirectory={workdir}",
    ]
    lines += [f"Environment={environment_assignment(k, v)}" for k, v in launch.env.items()]
    lines += [
        "ExecStart=" + " ".join(exec_arg(a) for a in launch.argv),
        "Restart=on-failure",
        "NoNewPrivileges=true",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def supervisor_spec(launch: Launch, name: str) -> dict[str, Any]:
    """What sovkit's own supervisor runs (hosts without systemd): JSON-able, argv exec'd without a shell."""
    if not ids.matches(ids.NAME, name):
        raise PlanError(f"service name {ids.describe(name)} is not a plain name")
    return {"name": name, "argv": list(launch.argv), "env": dict(launch.env)}
