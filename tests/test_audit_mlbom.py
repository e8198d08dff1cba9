"""CycloneDX 1.6 ML-BOMs: strictly valid, and carrying what a regulator needs (files, licence, lineage, card)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from sovkit.audit.mlbom import build_ml_bom, validate_ml_bom
from sovkit.inventory import load_inventory
from tests.conftest import INVENTORIES

EXAMPLES = ["demo", "eu-sovereign", "kr-telco"]


def _models(name: str) -> list[tuple[object, object]]:
    inv = load_inventory(INVENTORIES / name)
    return [(inv.site, m) for m in inv.site.models]


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_model_gets_a_strictly_valid_ml_bom(example: str) -> None:
    pairs = _models(example)
    assert pairs, f"{example} has no models"
    for site, model in pairs:
        text = build_ml_bom(site, model)  # type: ignore[arg-type]
        assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
        data = json.loads(text)
        assert data["bomFormat"] == "CycloneDX" and data["specVersion"] == "1.6"
        (component,) = data["components"]
        assert component["type"] == "machine-learning-model"
        assert component["name"] == model.name and component["version"] == model.version  # type: ignore[attr-defined]
        files = {p["value"]: f["hashes"][0]["content"]
                 for f in component["components"] for p in f["properties"] if p["name"] == "sovkit:store-path"}
        assert files == {f.path: f.sha256 for f in model.files}  # type: ignore[attr-defined]
        assert all(f["hashes"][0]["alg"] == "SHA-256" for f in component["components"])


def test_demo_bom_has_licence_publisher_lineage_and_model_card() -> None:
    (site, model), = _models("demo")
    data = json.loads(build_ml_bom(site, model))  # type: ignore[arg-type]
    c = data["components"][0]
    assert c["licenses"] == [{"license": {"id": "Apache-2.0"}}]  # inventory says apache-2.0: SPDX-normalised
    assert c["publisher"] == "sovkit-demo-lab" and c["supplier"]["name"] == "sovkit-demo-lab"
    (ancestor,) = c["pedigree"]["ancestors"]
    assert ancestor["name"] == "demo-ko-base" and ancestor["type"] == "machine-learning-model"
    assert {"name": "sovkit:origin", "value": "KR"} in ancestor["properties"]
    card = c["modelCard"]
    assert card["considerations"]["useCases"] == ["Demonstration Korean chat assistant (toy weights)"]
    assert card["modelParameters"]["datasets"] == [{"type": "dataset", "name": "synthetic demo corpus"}]
    assert card["quantitativeAnalysis"]["performanceMetrics"] == [{"type": "demo_accuracy", "value": "0.0"}]
    assert {"name": "sovkit:origin", "value": "KR"} in c["properties"]


def test_kr_telco_lineage_names_a_foreign_base_model() -> None:
    (site, model), = _models("kr-telco")
    c = json.loads(build_ml_bom(site, model))["components"][0]  # type: ignore[arg-type]
    origins = {a["name"]: next(p["value"] for p in a["properties"] if p["name"] == "sovkit:origin")
               for a in c["pedigree"]["ancestors"]}
    assert origins == {b.name: b.origin for b in model.base_models}  # type: ignore[attr-defined]


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d["components"][0].update(type="library"), "expected one machine-learning-model component"),
    (lambda d: d["components"][0].pop("modelCard"), "has no modelCard"),
    (lambda d: d["components"][0]["components"][0].update(hashes=[]), "files without a SHA-256 hash"),
    (lambda d: d["components"][0]["modelCard"].update(colour="red"), "Additional properties are not allowed"),
    (lambda d: d.update(specVersion="9.9"), "9.9"),
], ids=["not-a-model", "no-model-card", "unhashed-file", "unknown-field", "bad-spec-version"])
def test_validator_rejects_broken_ml_boms(mutate: object, expected: str) -> None:
    (site, model), = _models("demo")
    data = json.loads(build_ml_bom(site, model))  # type: ignore[arg-type]
    mutate(data)  # type: ignore[operator]
    error = validate_ml_bom(json.dumps(data))
    assert error is not None and expected in error, error


def test_bom_written_by_the_pack_is_the_validated_one(tmp_path: Path) -> None:
    """Guard against the JSON-level modelCard edit being dropped: the serialised text carries it."""
    (site, model), = _models("demo")
    text = build_ml_bom(site, model)  # type: ignore[arg-type]
    assert '"modelCard"' in text and validate_ml_bom(text) is None
