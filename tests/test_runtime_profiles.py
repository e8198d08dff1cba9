"""Runtime profiles as data (sovkit/catalog/runtimes.yaml) and what components/launch.py makes of them.

The argv/env cases are exact: a changed flag, a lost placeholder or a wrong JSON key fails here. The systemd
cases parse the rendered unit back by systemd's own rules (and let systemd-analyze read it) so quoting that
would split, expand or drop a value is caught.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sovkit.catalog import _HERE as CATALOG_DIR
from sovkit.catalog import PLACEHOLDER_RE, PLACEHOLDERS, load_catalog, read_catalog
from sovkit.components.launch import (
    KvTransferInput,
    Launch,
    LaunchInput,
    SpeculativeInput,
    render_launch,
    supervisor_spec,
    systemd_unit,
)
from sovkit.errors import CatalogError, PlanError

FAMILIES = ["vllm", "vllm-rbln", "furiosa-llm", "sglang", "demo"]
PREFIX = "/opt/sovkit/runtimes/rt/1.0"
MODEL = "/var/lib/sovkit/models/chat/current"
DRAFT = "/var/lib/sovkit/models/chat-draft/current"
BASE: dict[str, Any] = {
    "python": "/usr/bin/python3", "runtime_prefix": PREFIX, "runtime_bin": f"{PREFIX}/bin", "model_path": MODEL,
    "served_model_name": "chat", "bind": "10.0.0.1", "port": 8101, "tp": 2, "max_model_len": 4096,
    "max_batch": 8, "devices": [2, 3],
}
CONNECTOR = {"vllm": "NixlConnector", "vllm-rbln": "RblnNixlConnector", "sglang": "mooncake",
             "demo": "SovkitDemoConnector", "furiosa-llm": "NixlConnector"}
SPEC_METHOD = {"vllm": "eagle3", "sglang": "eagle3", "demo": "draft_model", "vllm-rbln": "eagle3",
               "furiosa-llm": "eagle3"}


def _kv_json(connector: str, role: str, rank: int) -> str:
    return (f'{{"kv_connector":"{connector}","kv_role":"{role}","kv_rank":{rank},"kv_parallel_size":2,'
            f'"kv_ip":"10.0.0.2","kv_port":14579}}')


def _spec_json(method: str) -> str:
    return f'{{"method":"{method}","model":"{DRAFT}","num_speculative_tokens":4}}'


def _input(family: str, case: str) -> LaunchInput:
    extra: dict[str, Any] = {}
    if case in ("prefill", "decode"):
        extra = {"role": case, "kv": KvTransferInput(connector=CONNECTOR[family], peer_host="10.0.0.2", port=14579)}
    elif case == "speculative":
        extra = {"speculative": SpeculativeInput(method=SPEC_METHOD[family], draft_model_path=DRAFT, num_tokens=4)}
    return LaunchInput(**BASE, **extra)


VLLM_BASE = [f"{PREFIX}/bin/vllm", "serve", MODEL, "--served-model-name", "chat", "--host", "10.0.0.1",
             "--port", "8101", "--tensor-parallel-size", "2", "--max-model-len", "4096", "--max-num-seqs", "8"]
VLLM_ENV = {"PYTHONPATH": PREFIX, "CUDA_VISIBLE_DEVICES": "2,3"}
RBLN_BASE = [f"{PREFIX}/bin/vllm", "serve", MODEL, "--served-model-name", "chat", "--host", "10.0.0.1",
             "--port", "8101", "--max-model-len", "4096", "--max-num-seqs", "8", "--block-size", "4096",
             "--tensor-parallel-size", "1"]
RBLN_ENV = {"PYTHONPATH": PREFIX, "RBLN_VISIBLE_DEVICES": "2,3", "VLLM_RBLN_NUM_DEVICES_PER_LOCAL_RANK": "2"}
FURIOSA_BASE = [f"{PREFIX}/bin/furiosa-llm", "serve", MODEL, "--devices", "npu:2,npu:3",
                "--tensor-parallel-size", "2", "--port", "8101", "--served-model-name", "chat",
                "--host", "10.0.0.1"]
SGLANG_BASE = ["/usr/bin/python3", "-m", "sglang.launch_server", "--model-path", MODEL, "--served-model-name", "chat",
               "--host", "10.0.0.1", "--port", "8101", "--tp-size", "2", "--context-length", "4096",
               "--max-running-requests", "8", "--enable-metrics"]
SGLANG_ENV = {"PYTHONPATH": PREFIX, "CUDA_VISIBLE_DEVICES": "2,3"}
DEMO_BASE = ["/usr/bin/python3", "-m", "simnpu_serve", "serve", MODEL, "--host", "10.0.0.1", "--port", "8101",
             "--served-model-name", "chat", "--tensor-parallel-size", "2", "--max-model-len", "4096",
             "--max-num-seqs", "8", "--devices", "npu:2,npu:3"]
DEMO_ENV = {"PYTHONPATH": PREFIX}

# (family, case) -> (argv, env), or the PlanError message part when the runtime cannot do it
EXPECTED: dict[tuple[str, str], tuple[list[str], dict[str, str]] | str] = {
    ("vllm", "plain"): (VLLM_BASE, VLLM_ENV),
    ("vllm", "prefill"): ([*VLLM_BASE, "--kv-transfer-config", _kv_json("NixlConnector", "kv_producer", 0)], VLLM_ENV),
    ("vllm", "decode"): ([*VLLM_BASE, "--kv-transfer-config", _kv_json("NixlConnector", "kv_consumer", 1)], VLLM_ENV),
    ("vllm", "speculative"): ([*VLLM_BASE,
        "--speculative-config", _spec_json("eagle3")], VLLM_ENV),
    ("vllm-rbln", "plain"): (RBLN_BASE, RBLN_ENV),
    ("vllm-rbln", "prefill"): ([*RBLN_BASE, "--kv-transfer-config", _kv_json("RblnNixlConnector", "kv_producer", 0),
                                            "--model-impl", "vllm"], RBLN_ENV),
    ("vllm-rbln", "decode"): ([*RBLN_BASE, "--kv-transfer-config", _kv_json("RblnNixlConnector", "kv_consumer", 1),
                                           "--model-impl", "vllm"], RBLN_ENV),
    ("vllm-rbln", "speculative"): "does not do speculative decoding",
    ("furiosa-llm", "plain"): (FURIOSA_BASE, DEMO_ENV),
    ("furiosa-llm", "prefill"): "does not serve prefill and decode apart",
    ("furiosa-llm", "decode"): "does not serve prefill and decode apart",
    ("furiosa-llm", "speculative"): "does not do speculative decoding",
    ("sglang", "plain"): (SGLANG_BASE, SGLANG_ENV),
    ("sglang", "prefill"): ([*SGLANG_BASE, "--disaggregation-mode", "prefill", "--disaggregation-transfer-backend",
                                           "mooncake", "--disaggregation-bootstrap-port", "14579"], SGLANG_ENV),
    ("sglang", "decode"): ([*SGLANG_BASE, "--disaggregation-mode", "decode", "--disaggregation-transfer-backend",
                                          "mooncake"], SGLANG_ENV),
    ("sglang", "speculative"): ([*SGLANG_BASE, "--speculative-algorithm", "EAGLE3", "--speculative-draft-model-path",
                                               DRAFT, "--speculative-num-draft-tokens", "4"], SGLANG_ENV),
    ("demo", "plain"): (DEMO_BASE, DEMO_ENV),
    ("demo", "prefill"): ([*DEMO_BASE, "--kv-transfer-config", _kv_json("SovkitDemoConnector", "kv_producer", 0)],
                          DEMO_ENV),
    ("demo", "decode"): ([*DEMO_BASE, "--kv-transfer-config", _kv_json("SovkitDemoConnector", "kv_consumer", 1)],
                         DEMO_ENV),
    ("demo", "speculative"): ([*DEMO_BASE,
        "--speculative-config", _spec_json("draft_model")], DEMO_ENV),
}


# --- the catalog -------------------------------------------------------------------------------------------

def test_catalog_has_the_runtime_families_with_sourced_facts() -> None:
    catalog = load_catalog()
    assert list(catalog.runtimes) == FAMILIES
    vendors = {a.vendor for a in catalog.accelerators.values()}
    assert catalog.runtimes["vllm"].accelerators == ["nvidia"]
    assert catalog.runtimes["vllm-rbln"].accelerators == ["rebellions"]
    assert catalog.runtimes["furiosa-llm"].accelerators == ["furiosa"]
    assert set(catalog.runtimes["demo"].accelerators) == vendors
    for r in catalog.runtimes.values():
        sources = [r.accelerators_source, r.disaggregation.source, r.speculative.source]
        sources += [p.source for p in r.launch + r.disaggregation.args + r.speculative.args]
        sources += [v.source for v in r.env] + [e.source for e in dict(r.endpoints).values()]
        assert all(re.match(r"^\[(V|S|R)\] ", s) for s in sources), r.id
    assert not catalog.runtimes["furiosa-llm"].disaggregation.supported
    assert catalog.runtimes["furiosa-llm"].disaggregation.source.startswith("[R]")
    rbln = catalog.runtimes["vllm-rbln"]
    assert rbln.tensor_parallel is not None and rbln.tensor_parallel.max == 1
    assert rbln.tensor_parallel.devices_env == "VLLM_RBLN_NUM_DEVICES_PER_LOCAL_RANK"
    assert rbln.disaggregation.connectors == ["RblnNixlConnector", "RblnP2pGlooConnector"]
    assert catalog.runtimes["furiosa-llm"].endpoints.readiness.path == "/v1/models"
    assert catalog.runtimes["vllm"].endpoints.readiness.path == "/health"


def test_every_placeholder_in_the_shipped_profiles_is_known() -> None:
    used = {name for r in load_catalog().runtimes.values() for _, text in r.strings()
            for name in PLACEHOLDER_RE.findall(text)}
    assert used <= PLACEHOLDERS
    assert {"kv_transfer_config", "speculative_config", "npu_devices", "devices_csv", "pd_mode"} <= used


@pytest.fixture
def catalog_copy(tmp_path: Path) -> Path:
    for f in CATALOG_DIR.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def _edit(directory: Path, old: str, new: str, count: int = 1) -> None:
    path = directory / "runtimes.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def test_copy_of_the_shipped_catalog_reads_the_same(catalog_copy: Path) -> None:
    assert read_catalog(catalog_copy) == load_catalog()


@pytest.mark.parametrize(("old", "new", "message"), [
    ('"{served_model_name}"', '"{served_name}"',
     "runtime profile vllm: launch[1] uses unknown placeholder {served_name}"),
    ('"--port", "{port}"', '"--port", "{Port}"', "uses unknown placeholder {Port}"),
    ('"{model_path}"]', '"{model_path}", "{kv_port}"]', "vllm: launch[0] uses {kv_port}, which has a value only "
                                                        "under disaggregation"),
    ('"{model_path}"]', '"{model_path}", "{spec_tokens}"]', "uses {spec_tokens}, which has a value only under "
                                                            "speculative"),
    ('accelerators: [nvidia]', 'accelerators: [nvidla]', "runtime profile vllm: accelerators names unknown vendor "
                                                         "'nvidla'"),
    ('["--tensor-parallel-size", "1"]', '["--tensor-parallel-size", "{tp}"]',
     "vllm-rbln: tensor_parallel.max is 1: the device count cannot go into argv as {tp}"),
    ('source: "[V] vllm examples/online_serving/*.sh (vllm serve <model>)"',
     'source: "vllm examples/online_serving/*.sh"', "catalog file runtimes.yaml is malformed"),
    ("    router: none\n", "    router: none\n    extra: 1\n", "catalog file runtimes.yaml is malformed"),
])
def test_a_bad_runtime_profile_is_a_clear_catalog_error(catalog_copy: Path, old: str, new: str,
                                                        message: str) -> None:
    _edit(catalog_copy, old, new)
    with pytest.raises(CatalogError) as exc:
        read_catalog(catalog_copy)
    assert message in exc.value.message
    assert exc.value.hint == "reinstall sovkit"


def test_an_unknown_placeholder_in_an_env_value_is_refused(catalog_copy: Path) -> None:
    _edit(catalog_copy, 'value: "{devices_csv}"', 'value: "{gpus}"')
    with pytest.raises(CatalogError, match=r"vllm: env\.CUDA_VISIBLE_DEVICES uses unknown placeholder \{gpus\}"):
        read_catalog(catalog_copy)


# --- render_launch -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("family", "case"), list(EXPECTED))
def test_render_launch(family: str, case: str) -> None:
    profile = load_catalog().runtimes[family]
    want = EXPECTED[(family, case)]
    if isinstance(want, str):
        with pytest.raises(PlanError, match=want):
            render_launch(profile, _input(family, case))
        return
    launch = render_launch(profile, _input(family, case))
    assert launch.argv == want[0]
    assert launch.env == want[1]
    for i, arg in enumerate(launch.argv):  # the JSON is real JSON in vLLM's format
        if arg in ("--kv-transfer-config", "--speculative-config"):
            assert isinstance(json.loads(launch.argv[i + 1]), dict)


def test_kv_json_is_vllm_format() -> None:
    launch = render_launch(load_catalog().runtimes["vllm"], _input("vllm", "decode"))
    assert json.loads(launch.argv[-1]) == {"kv_connector": "NixlConnector", "kv_role": "kv_consumer", "kv_rank": 1,
                                           "kv_parallel_size": 2, "kv_ip": "10.0.0.2", "kv_port": 14579}


def test_ngram_speculation_names_no_draft_model() -> None:
    inp = LaunchInput(**BASE, speculative=SpeculativeInput(method="ngram", draft_model_path=DRAFT, num_tokens=3))
    launch = render_launch(load_catalog().runtimes["vllm"], inp)
    assert json.loads(launch.argv[-1]) == {"method": "ngram", "num_speculative_tokens": 3}


@pytest.mark.parametrize(("family", "extra", "message"), [
    ("vllm", {"role": "prefill", "kv": {"connector": "RblnNixlConnector", "peer_host": "h2", "port": 1}},
     "runtime vllm has no KV connector 'RblnNixlConnector'"),
    ("sglang", {"speculative": {"method": "ngram", "draft_model_path": DRAFT}},
     "runtime sglang does not do speculative decoding with method 'ngram'"),
])
def test_what_a_runtime_cannot_do_is_refused(family: str, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        render_launch(load_catalog().runtimes[family], LaunchInput.model_validate({**BASE, **extra}))


@pytest.mark.parametrize(("change", "message"), [
    ({"devices": [0]}, "1 devices given for tensor parallel 2"),
    ({"devices": [1, 1]}, "a device index is given twice"),
    ({"role": "decode"}, "needs its KV transfer"),
    ({"kv": {"connector": "NixlConnector", "peer_host": "h", "port": 1}}, "needs its KV transfer"),
    ({"model_path": "/models/../etc"}, "not a plain absolute path"),
    ({"model_path": "/models/$HOME"}, "not a plain absolute path"),
    ({"model_path": "/models/50%"}, "not a plain absolute path"),
    ({"served_model_name": "chat;rm"}, "served_model_name"),
    ({"bind": "host name"}, "neither an IP address nor a valid host name"),
    ({"port": 0}, "port"),
    ({"surprise": 1}, "Extra inputs are not permitted"),
])
def test_launch_input_is_validated(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        LaunchInput.model_validate({**BASE, **change})


# --- systemd unit ------------------------------------------------------------------------------------------

_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "'": "'"}


def _systemd_words(rvalue: str) -> list[str]:
    """A value split as systemd does for ExecStart= / Environment= (systemd.syntax, systemd.service
    "Command lines"): specifiers first (only %% may appear), then words, double quotes, C escapes."""
    assert not re.search(r"%[^%]", rvalue.replace("%%", "")), f"unresolved specifier in {rvalue!r}"
    text = rvalue.replace("%%", "%")
    words: list[str] = []
    i = 0
    while i < len(text):
        if text[i] in " \t":
            i += 1
            continue
        word, quoted = [], False
        while i < len(text) and (quoted or text[i] not in " \t"):
            ch = text[i]
            if ch == '"':
                quoted = not quoted
                i += 1
            elif ch == "\\":
                nxt = text[i + 1]
                if nxt == "x":
                    word.append(chr(int(text[i + 2:i + 4], 16)))
                    i += 4
                else:
                    assert nxt in _ESCAPES, f"escape \\{nxt} systemd would not accept"
                    word.append(_ESCAPES[nxt])
                    i += 2
            else:
                word.append(ch)
                i += 1
        assert not quoted, f"unbalanced quotes in {rvalue!r}"
        words.append("".join(word))
    return words


def _exec_words(rvalue: str) -> list[str]:
    """ExecStart= words after exec-time variable expansion: $$ is a literal $, any other $ would expand."""
    out = []
    for w in _systemd_words(rvalue):
        assert not re.search(r"\$[^$]|\$$", w.replace("$$", "")), f"{w!r} would expand a variable"
        out.append(w.replace("$$", "$"))
    return out


def _parse_unit(unit: str) -> tuple[list[str], dict[str, str], dict[str, str]]:
    argv: list[str] = []
    env: dict[str, str] = {}
    other: dict[str, str] = {}
    for line in unit.splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStart":
            argv = _exec_words(value)
        elif key == "Environment":
            for word in _systemd_words(value):
                name, _, val = word.partition("=")
                env[name] = val
        elif value and not line.startswith(("#", "[")):
            other[key] = value
    return argv, env, other


HOSTILE = ["a b", 'c"d', "e\\f", "100%", "%n", "$HOME", "${HOME}", "$$", ";", "\\;", "'q'", "tab\there",
           "new\nline", "bell\x07", "{port}", "", " lead", "trail\\"]


@pytest.mark.parametrize(("family", "case"), [k for k, v in EXPECTED.items() if not isinstance(v, str)])
def test_systemd_unit_round_trips_every_rendered_launch(family: str, case: str) -> None:
    launch = render_launch(load_catalog().runtimes[family], _input(family, case))
    argv, env, other = _parse_unit(systemd_unit(launch, f"sovkit {case} chat", workdir="/var/lib/sovkit"))
    assert argv == launch.argv
    assert env == launch.env
    assert other["WorkingDirectory"] == "/var/lib/sovkit"
    assert other["Description"] == f"sovkit {case} chat"


def test_systemd_unit_round_trips_hostile_values() -> None:
    launch = Launch(argv=["/usr/bin/python3", *HOSTILE],
                    env={"A": "x y", "B": 'q"uo\\te', "C": "50%", "D": "$HOME ${X}", "E": "a\nb"})
    unit = systemd_unit(launch, "100% sovkit", workdir="/srv")
    argv, env, other = _parse_unit(unit)
    assert argv == launch.argv
    assert env == launch.env
    assert other["Description"] == "100%% sovkit"  # Description is specifier-expanded: %% is one %
    assert "\n\n\n" not in unit and unit.count("ExecStart=") == 1  # the newline stayed escaped


@pytest.mark.parametrize(("argv", "workdir", "message"), [
    (["python3", "-V"], "/srv", "the program to start must be a plain absolute path"),
    (["/opt/$X/python3"], "/srv", "the program to start must be a plain absolute path"),
    (["/usr/bin/python3"], "srv", "working directory 'srv' is not a plain absolute path"),
])
def test_systemd_unit_refuses_what_systemd_would_misread(argv: list[str], workdir: str, message: str) -> None:
    with pytest.raises(PlanError, match=re.escape(message)):
        systemd_unit(Launch(argv=argv, env={}), "d", workdir=workdir)
    with pytest.raises(PlanError, match="control character"):
        systemd_unit(Launch(argv=["/usr/bin/python3"], env={}), "two\nlines", workdir="/srv")


def _verify(unit_text: str, tmp_path: Path) -> str:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed to check the rendered unit (apt-get install systemd)"
    path = tmp_path / "sovkit-test.service"
    path.write_text(unit_text, encoding="utf-8")
    proc = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=120)
    return f"rc={proc.returncode}\n{proc.stdout}{proc.stderr}"


def test_systemd_analyze_reads_the_unit_without_complaint(tmp_path: Path) -> None:
    launch = Launch(argv=[sys.executable, *HOSTILE], env={"A": 'x "y" \\z 50% $Y'})
    report = _verify(systemd_unit(launch, "sovkit hostile", workdir=str(tmp_path)), tmp_path)
    assert report.startswith("rc=0") and "sovkit-test.service" not in report, report
    # the same values joined naively are refused or corrected by systemd: the check above can fail
    naive = systemd_unit(Launch(argv=[sys.executable], env={}), "x", workdir=str(tmp_path)).replace(
        f'ExecStart="{sys.executable}"', f"ExecStart={sys.executable} " + " ".join(HOSTILE[:4]))
    assert "sovkit-test.service" in _verify(naive, tmp_path)


def test_supervisor_spec_is_json_and_refuses_odd_names() -> None:
    launch = render_launch(load_catalog().runtimes["demo"], _input("demo", "prefill"))
    spec = supervisor_spec(launch, "chat-prefill")
    assert json.loads(json.dumps(spec)) == {"name": "chat-prefill", "argv": launch.argv, "env": launch.env}
    with pytest.raises(PlanError, match="not a plain name"):
        supervisor_spec(launch, "../x")
