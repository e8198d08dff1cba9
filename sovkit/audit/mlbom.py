"""CycloneDX 1.6 ML-BOM for one model: what it is, every file's digest, licence, publisher, lineage.

Built with cyclonedx-python-lib's model classes. The library has no model
card class, so ``modelCard`` is added to the serialised JSON; the result is then
checked with the library's strict 1.6 JSON schema validator, so a BOM sovkit
writes is one any CycloneDX tool accepts.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType, Pedigree
from cyclonedx.model.contact import OrganizationalEntity
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from sovkit import __version__
from sovkit.inventory.models import BaseModelRef, Model, ModelCard, Site

ML_MODEL = "machine-learning-model"


def bom_file_name(model: Model) -> str:
    return f"{model.name}.cdx.json"


def _licenses(expression: str) -> list[Any]:
    return [LicenseFactory().make_from_string(expression)]


def _props(**values: object) -> list[Property]:
    return [Property(name=f"sovkit:{k.replace('_', '-')}", value=str(v)) for k, v in values.items()
            if v is not None and v != ""]


def _ancestor(base: BaseModelRef, index: int) -> Component:
    return Component(
        type=ComponentType.MACHINE_LEARNING_MODEL, name=base.name, publisher=base.publisher,
        supplier=OrganizationalEntity(name=base.publisher), licenses=_licenses(base.license),
        bom_ref=f"base-model-{index}:{base.name}", properties=_props(origin=base.origin),
    )


def _model_component(site: Site, model: Model) -> Component:
    files = [
        Component(type=ComponentType.FILE, name=posixpath.basename(f.path), bom_ref=f"file:{f.path}",
                  hashes=[HashType(alg=HashAlgorithm.SHA_256, content=f.sha256)],
                  properties=_props(store_path=f.path, size=f.size))
        for f in model.files
    ]
    pedigree = Pedigree(ancestors=[_ancestor(b, i) for i, b in enumerate(model.base_models)]) \
        if model.base_models else None
    return Component(
        type=ComponentType.MACHINE_LEARNING_MODEL, name=model.name, version=model.version,
        bom_ref=model_ref(model), publisher=model.publisher, supplier=OrganizationalEntity(name=model.publisher),
        licenses=_licenses(model.license), pedigree=pedigree, components=files,
        properties=_props(origin=model.origin, dtype=model.dtype, parameters_b=model.parameters_b,
                          signature=model.signature, signature_format=model.signature_format if model.signature
                          else None, site=site.metadata.name),
    )


def model_ref(model: Model) -> str:
    return f"model:{model.name}@{model.version}"


def model_card(card: ModelCard | None) -> dict[str, Any]:
    """The inventory's model card in CycloneDX 1.6 ``modelCard`` form."""
    if card is None:
        return {"properties": [{"name": "sovkit:model-card", "value": "none recorded in the inventory"}]}
    out: dict[str, Any] = {"considerations": {"useCases": [card.purpose]}}
    if card.limitations:
        out["considerations"]["technicalLimitations"] = [card.limitations]
    if card.datasets:
        out["modelParameters"] = {"datasets": [{"type": "dataset", "name": d} for d in card.datasets]}
    if card.metrics:
        out["quantitativeAnalysis"] = {"performanceMetrics": [{"type": k, "value": str(v)}
                                                              for k, v in sorted(card.metrics.items())]}
    return out


def build_ml_bom(site: Site, model: Model) -> str:
    """The ML-BOM of ``model`` as CycloneDX 1.6 JSON text (validated; raises ValueError if invalid)."""
    bom = Bom()
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name="sovkit", version=__version__))
    bom.metadata.properties.update(_props(site=site.metadata.name, jurisdiction=site.jurisdiction.region
                                          or site.jurisdiction.country))
    component = _model_component(site, model)
    bom.components.add(component)
    data = json.loads(JsonV1Dot6(bom).output_as_string())
    for c in data.get("components", []):
        if c.get("bom-ref") == model_ref(model):
            c["modelCard"] = model_card(model.card)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    error = validate_ml_bom(text)
    if error:
        raise ValueError(f"ML-BOM for {model.name} is not valid CycloneDX 1.6: {error}")
    return text


def validate_ml_bom(text: str) -> str | None:
    """Strict CycloneDX 1.6 schema check plus the ML-BOM shape; the first problem, or None."""
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        return str(error)
    data = json.loads(text)
    if data.get("bomFormat") != "CycloneDX" or data.get("specVersion") != "1.6":
        return f"not a CycloneDX 1.6 document (bomFormat {data.get('bomFormat')!r}, " \
               f"specVersion {data.get('specVersion')!r})"
    models = [c for c in data.get("components", []) if c.get("type") == ML_MODEL]
    if len(models) != 1:
        return f"expected one {ML_MODEL} component, found {len(models)}"
    model = models[0]
    if "modelCard" not in model:
        return f"component {model.get('name')} has no modelCard"
    files = model.get("components", [])
    if not files:
        return f"component {model.get('name')} lists no files"
    unhashed = [f.get("name") for f in files if not any(h.get("alg") == "SHA-256" for h in f.get("hashes", []))]
    if unhashed:
        return f"files without a SHA-256 hash: {', '.join(map(str, unhashed))}"
    return None
