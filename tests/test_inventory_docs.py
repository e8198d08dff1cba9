"""docs/inventory.md is generated from the models and the catalog; it must not drift from them."""

from __future__ import annotations

import subprocess
import sys

from sovkit.inventory import docgen
from sovkit.inventory.models import Host, Site
from tests.conftest import ROOT

DOC = ROOT / "docs" / "inventory.md"


def test_docs_inventory_is_current() -> None:
    """Fails when a model or the catalog changed: run `python -m sovkit.inventory.docgen > docs/inventory.md`."""
    assert DOC.read_text(encoding="utf-8") == docgen.render(), (
        "docs/inventory.md is stale: run `python -m sovkit.inventory.docgen > docs/inventory.md`"
    )


def test_docgen_module_prints_the_reference() -> None:
    proc = subprocess.run([sys.executable, "-m", "sovkit.inventory.docgen"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == docgen.render()


def test_reference_covers_every_field() -> None:
    text = docgen.render()
    for name, info in Site.model_fields.items():
        assert f"| `{info.alias or name}` |" in text
    for name in Host.model_fields:
        assert f"| `{name}` |" in text
    assert "| `power_budget_w` | number (> 0, finite) | **required** |" in text
    assert "| `role` | `prefill` \\| `decode` \\| `both` | `both` |" in text
    assert "`rebellions-rebel-quad`" in text and "`arm-neoverse-v3-agi`" in text
    assert "| `vllm-rbln` | vLLM for Rebellions NPUs (vllm-rbln) | rebellions | `/health` |" in text
    assert "## Files and merge order" in text


def test_type_names() -> None:
    from sovkit.inventory import models as m

    assert docgen.type_name(list[m.Name]) == "list of name"
    assert docgen.type_name(m.Jurisdiction | None) == "jurisdiction code"
    assert docgen.type_name(dict[str, float | str]) == "map of string to number \\| string"
