"""Finding 1 (Ansible side): no string sovkit hands to Ansible is ever rendered as a template.

The inventory models are bypassed on purpose: payloads are put straight into the HostTarget variables and
connection vars given to the real AnsibleRunnerExecutor, so the Ansible layer is proven on its own. Each
mutated string gets its own host (one Ansible run for all), and every payload would create its own marker
file on the controller if it were rendered or run through a shell. No marker may appear.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sovkit.components.host import desired_site
from sovkit.inventory import load_inventory
from sovkit.plan.diff import diff
from sovkit.provision.ansible_executor import AnsibleRunnerExecutor
from sovkit.provision.executor import ExecEvent, HostTarget
from sovkit.provision.hostvars import apply_target, common_target, observe_target
from sovkit.resources import templates_dir
from sovkit.state.models import HostRecord
from tests.driverkit import add_driver, boot_with_driver, use_driver
from tests.sitefactory import KIND, make_site

# one Ansible run over ~50 local hosts: minutes on two cores, so it gets more than the default timeout
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def payload(markers: Path, tag: str) -> str:
    """``{{ }}``, ``{% %}``, ``lookup('pipe')`` and shell metacharacters, each touching its own marker."""
    m = markers / tag
    return (f"{{{{ lookup('pipe', 'touch {m}.expr') }}}}"
            f"{{% if lookup('pipe', 'touch {m}.stmt') %}}{{% endif %}}"
            f";touch {m}.semi $(touch {m}.subst)|touch {m}.pipe&touch {m}.amp `touch {m}.tick`")


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths of the string leaves (first item of each list only: the others have the same shape)."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, (*path, k))
    elif isinstance(value, list) and value:
        yield from leaves(value[0], (*path, 0))


def mutated(data: dict[str, Any], path: tuple[Any, ...], text: str) -> dict[str, Any]:
    import copy
    out = copy.deepcopy(data)
    node: Any = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] += text
    return out


def local_site(tmp: Path, n: int) -> Any:
    hosts = [{"name": f"h{i}", "rack": "demo-rack", "address": "127.0.0.1", "arch": "aarch64",
              "cpu": "arm-neoverse-v2", "connection": "local", "root": f"hosts/h{i}",
              "accelerators": [{"kind": KIND, "count": 2, "firmware": "atom-max-fw-1.2.0"}]} for i in range(n)]
    site = make_site(tmp, hosts=hosts)
    site.data["racks"][0]["power_budget_w"] = 100000
    for dep in site.data["deployments"]:
        dep["tensor_parallel"] = 1  # prefill and decode share a host when there is one
    add_driver(site, tmp / "debs", "rbln-driver-1-1", "1.1")
    use_driver(site, "rbln-driver-1-1")
    site.save()
    for h in hosts:
        boot_with_driver(site, h["name"], "1.0")
    return site


def run(playbook: str, targets: list[HostTarget], workdir: Path) -> list[ExecEvent]:
    events: list[ExecEvent] = []
    AnsibleRunnerExecutor(forks=8).run(playbook, targets, events.append, workdir)
    return events


ROLE_OF = {"sovkit_drivers": "driver", "sovkit_firmware": "firmware", "sovkit_runtimes": "runtime",
           "sovkit_models": "model", "sovkit_serving": "serving", "sovkit_remove": "remove"}


def _role_uses(items: str, var: str) -> bool:
    """Whether the role run for each item of ``items`` names the host variable ``var`` anywhere in its tasks."""
    tasks = templates_dir() / "ansible" / "roles" / ROLE_OF[items] / "tasks"
    return any(re.search(rf"\b{var}\b", f.read_text()) for f in tasks.rglob("*.yml"))


def _tag(path: tuple[Any, ...]) -> str:
    return ".".join(map(str, path))


def test_no_variable_or_connection_var_is_rendered_by_apply_or_observe(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    base_site = local_site(tmp_path / "probe", 1)
    inv = load_inventory(base_site.path)
    desired = desired_site(inv)
    plan = diff("demo", desired, {})
    known = tmp_path / "known_hosts"
    probe = apply_target(inv, desired["h0"], plan.for_host("h0"), HostRecord(), known)
    apply_leaves = [("conn", p) for p in leaves(probe.connection_vars)] + [
        ("vars", p) for p in leaves(probe.variables) if p[0] != "sovkit_root"]  # sovkit_root: also in conn
    ssh_conn = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 1,
                "ansible_user": "nobody", "ansible_ssh_private_key_file": "/nonexistent/key",
                "ansible_ssh_common_args": "-o BatchMode=yes", "ansible_python_interpreter": "/usr/bin/python3"}
    ssh_leaves = [p for p in leaves(ssh_conn)]
    n_local = len(apply_leaves) + 1  # + one untouched host: the roles still work with the values marked
    site = local_site(tmp_path, n_local)
    inv = load_inventory(site.path)
    desired = desired_site(inv)
    plan = diff("demo", desired, {})
    targets: list[HostTarget] = []
    literal_config = None
    reached: dict[str, set[str]] = {}  # host-wide variable -> the roles run with it marked
    for i in range(n_local):
        t = apply_target(inv, desired[f"h{i}"], plan.for_host(f"h{i}"), HostRecord(), known)
        variables = {**t.variables, "sovkit_remove": [{"component": "model", "name": "gone", "paths": [
            f"{desired[f'h{i}'].root}/opt/sovkit/models/gone"]}]}
        conn = t.connection_vars
        if i < len(apply_leaves):
            where, path = apply_leaves[i]
            # only the role that uses the mutated value runs (the others are costly and proven elsewhere)
            lists = ("sovkit_drivers", "sovkit_firmware", "sovkit_runtimes", "sovkit_models", "sovkit_serving",
                     "sovkit_remove")
            keep = {path[0]} if where == "vars" and path[0] in lists else {
                "sovkit_models", "sovkit_serving", "sovkit_remove"}
            if path[0].startswith("sovkit_") and path[0] not in lists:
                keep = {k for k in keep if _role_uses(k, path[0])}  # a role that never names it cannot render it
                reached[path[0]] = keep
            # the leaves are those of each list's first item, so the first item is all a mutated host needs
            variables = {k: (([] if k not in keep else v[:1]) if k in lists else v) for k, v in variables.items()}
            text = payload(markers, f"apply.{where}.{_tag(path)}")
            if where == "conn":
                conn = mutated(conn, path, text)
            else:
                variables = mutated(variables, path, text)
            if path == ("sovkit_serving", 0, "spec"):
                literal_config = (Path(variables["sovkit_serving"][0]["spec_path"]), text)
        targets.append(HostTarget(t.name, conn, variables))
    for j, path in enumerate(ssh_leaves):
        targets.append(HostTarget(f"s{j}", mutated(ssh_conn, path, payload(markers, f"ssh.{_tag(path)}")),
                                  {**targets[-1].variables, "sovkit_drivers": [], "sovkit_firmware": [],
                                   "sovkit_runtimes": []}))
    # the host-wide variables still reach every role that names them (and those roles only)
    assert {"sovkit_python": {"sovkit_models", "sovkit_serving", "sovkit_remove"},
            "sovkit_supervise": {"sovkit_serving", "sovkit_remove"}, "sovkit_serving_files": {"sovkit_serving"},
            "sovkit_swap_dir": {"sovkit_models"}, "sovkit_swap_link": {"sovkit_models"},
            "sovkit_root": {"sovkit_remove"}}.items() <= reached.items(), reached
    events = run("apply.yml", targets, tmp_path / "runs")

    # one observed host per leaf of sovkit_observe, plus the untouched host that applied everything (the other
    # hosts would only observe unmarked values: each costs seconds of Ansible and proves nothing more)
    obs_targets = []
    obs_leaves = list(leaves(observe_target(inv, desired["h0"], HostRecord(), known).variables["sovkit_observe"]))
    assert 0 < len(obs_leaves) < n_local - 1
    for i in [*range(len(obs_leaves)), n_local - 1]:
        t = observe_target(inv, desired[f"h{i}"], HostRecord(), known)
        assert list(leaves(t.variables["sovkit_observe"])) == obs_leaves
        if i < len(obs_leaves):
            obs = mutated(t.variables["sovkit_observe"], obs_leaves[i],
                          payload(markers, f"observe.{_tag(obs_leaves[i])}"))
            t = HostTarget(t.name, t.connection_vars, {**t.variables, "sovkit_observe": obs})
        obs_targets.append(t)
    obs_events = run("observe.yml", obs_targets, tmp_path / "runs")

    # the serving probes (readiness, smoke request) and the serving rollback: every leaf of their items too
    serving = desired["h0"].serving["chat-prefill"]
    probe_items = {"sovkit_probes": [{"name": "chat-prefill",
                                      "args": ["ready", "http://127.0.0.1:1", "/health", "1"]}]}
    item = {"name": "chat-prefill", "action": "restore", "service": serving.service, "manager": "supervisor",
            "rundir": serving.rundir, "spec_path": serving.spec_path, "record_path": serving.record_path,
            "files": [serving.spec_path], "fields": serving.record()}
    plays = [("probe.yml", probe_items),
             ("serving_rollback.yml", {"sovkit_model_back": [{"name": "m", "dir": f"{serving.rundir}/m"}],
                                       "sovkit_serving_rollback": []}),
             ("serving_rollback.yml", {"sovkit_model_back": [], "sovkit_serving_rollback": [item]}),
             ("serving_rollback.yml", {"sovkit_model_back": [],
                                       "sovkit_serving_rollback": [{**item, "action": "stop"}]}),
             ("serving_stop.yml", {"sovkit_serving_stop": [item]})]
    for k, (playbook, items) in enumerate(plays):
        base = common_target(inv, desired["h0"], known)
        play_targets = [HostTarget(f"p{k}-{i}", base.connection_vars,
                                   {**base.variables, **mutated(items, leaf, payload(
                                       markers, f"{k}.{playbook}.{_tag(leaf)}"))})
                        for i, leaf in enumerate(leaves(items))]
        run(playbook, play_targets, tmp_path / "runs")

    assert sorted(p.name for p in markers.iterdir()) == [], "a payload was rendered or run on the controller"
    # the untouched host applied everything: unsafe-marked values still drive the roles
    last = f"h{n_local - 1}"
    assert {e.data["sovkit_record"]["component"] for e in events if e.host == last and e.kind == "record"} == {
        "driver", "firmware", "runtime", "model", "serving"}
    assert not [e for e in events if e.host == last and e.kind in ("failed", "unreachable")]
    assert [e.data for e in obs_events if e.host == last and e.kind == "record"], "the untouched host was observed"
    assert not [e for e in obs_events if e.host == last and e.kind in ("failed", "unreachable")]
    # a value that is written to the host arrives there literally, unexecuted
    assert literal_config is not None
    config_path, text = literal_config
    assert config_path.read_text().endswith(text)
