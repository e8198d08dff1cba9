"""Finding 6: memory amplification past the alias-bomb node guard.

One alias of a 1 MB string is one node, so the node budget let a 1 MB file alias it 300 times; every later copy
(validation, the canonical digest, Ansible variables) then paid 300 MB, and `validate` used ~700 MB. Aliases
are now budgeted in text as well, and the refusal happens at the alias that crosses the budget — before the
document is built, let alone validated.
"""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import pytest

from sovkit.inventory.yamlsource import SourceMap, YamlInputError, read_yaml
from tests.conftest import INVENTORIES, run_cli

MB = 1024 * 1024
ALIASES = 300


def _bomb_site(root: Path, string_size: int = MB, aliases: int = ALIASES) -> tuple[Path, int]:
    """The demo site with a ``string_size`` description aliased ``aliases`` times as labels.

    Returns the file and the line of the first alias (``l0``); label ``lN`` is on that line + N.
    """
    shutil.copytree(INVENTORIES / "demo", root, ignore=shutil.ignore_patterns("generate.py", "*.in", "hosts"))
    path = root / "site.yaml"
    text = path.read_text()
    big = "x" * string_size
    labels = "".join(f"    l{i}: *big\n" for i in range(aliases))
    text = text.replace("  description: Single-machine demo of a Korean sovereign inference site\n",
                        f'  description: &big "{big}"\n')
    text = text.replace("  labels: {environment: demo}\n", "  labels:\n" + labels)
    path.write_text(text)
    return path, next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("    l0: *big"))


def _refused_label(problem_path: str) -> int:
    assert problem_path.startswith("metadata.labels.l"), problem_path
    return int(problem_path.rsplit(".l", 1)[1])


def test_bomb_refused_at_the_alias_before_expansion(tmp_path: Path) -> None:
    path, first = _bomb_site(tmp_path / "site")
    assert path.stat().st_size < 2 * MB  # a small file ...
    expanded = ALIASES * MB  # ... that would expand to 300 MB of text
    tracemalloc.start()
    try:
        with pytest.raises(YamlInputError) as caught:
            read_yaml(path, SourceMap())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    problem = caught.value.problem
    n = _refused_label(problem.path)
    assert n < 64, problem.render()  # refused at an early alias (8 MiB of repeats), not after all 300
    assert problem.file == str(path) and problem.line == first + n, problem.render()
    assert "*big" in problem.message, problem.render()
    assert problem.hint
    # refused before anything copied the repeated text: the peak is a few copies of the file, not 300 MB
    assert peak < 16 * MB < expanded, peak


def test_cli_validate_refuses_the_bomb_with_a_located_error(tmp_path: Path) -> None:
    path, first = _bomb_site(tmp_path / "site")
    result = run_cli("validate", path)
    assert result.code == 1, result.text
    assert f"{path}:" in result.err and "aliases repeat more than" in result.err, result.err
    where = result.err.split(f"{path}:", 1)[1]
    n = _refused_label(where.split("[", 1)[1].split("]", 1)[0])
    assert where.startswith(f"{first + n}:"), result.err
    assert "Traceback" not in result.text


def test_nested_anchor_counts_all_of_its_text(tmp_path: Path) -> None:
    """An anchor on a list of long strings is one alias node but all of the list's text."""
    path = tmp_path / "nested.yaml"
    item = "y" * (256 * 1024)
    lines = ["apiVersion: sovkit.dev/v1", "kind: Site", "metadata:", "  name: x", "  labels: {}",
             "residency:", "  allowed_egress: &many", *[f'    - "{item}"' for _ in range(4)], "waivers:"]
    lines += [f"  - *many  # {i}" for i in range(200)]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(YamlInputError) as caught:
        read_yaml(path, SourceMap())
    assert "*many" in caught.value.problem.message


def test_honest_reuse_is_not_refused(tmp_path: Path) -> None:
    """Control: aliasing small blocks many times (a shared accelerator list on every host) stays allowed."""
    path = tmp_path / "honest.yaml"
    lines = ["apiVersion: sovkit.dev/v1", "kind: Site", "metadata: {name: x}",
             "shared: &acc", "  - {kind: rebellions-atom-max, count: 2, firmware: fw-1}", "hosts:"]
    lines += [f"  - {{name: h{i}, accelerators: *acc}}" for i in range(5000)]
    path.write_text("\n".join(lines) + "\n")
    data = read_yaml(path, SourceMap())
    assert len(data["hosts"]) == 5000
