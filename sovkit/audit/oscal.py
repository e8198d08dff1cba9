"""OSCAL for the audit pack: assessment results and the policy pack's component definition, via trestle's models.

Everything comes from data the pack already holds: the control mapping
(``policies/mappings/controls.yaml``, copied to ``policy/controls.yaml``), the
rule ids of the pack's own policy bundle, the findings report.json records,
the policy input (artifact digests) and the attestation log. UUIDs are
uuid5 of the pack's identity, so the same pack always gets the same ids; the
documents' times are the report's. :func:`check_documents` is the verify step.
"""

from __future__ import annotations

import argparse
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AnyUrl, BaseModel, ConfigDict, Field, ValidationError, model_validator
from trestle.common.const import VAL_MODE_ALL
from trestle.core import oscal_backward_compatibility
from trestle.core.validator_factory import validator_factory
from trestle.oscal import OSCAL_VERSION, common
from trestle.oscal import assessment_results as ar
from trestle.oscal import component as cd

from sovkit.attest.log import LogEntry
from sovkit.audit.model import (
    AuditReport,
    ControlResult,
    ControlSection,
    Finding,
    RuleEvidence,
    RuleResult,
    UncoveredControl,
)
from sovkit.digest import sha256_file
from sovkit.errors import SovkitError
from sovkit.resources import policies_dir

MAPPING_SCHEMA = "https://sovkit.dev/control-mapping/v1"
MAPPING_COPY = "policy/controls.yaml"
ASSESSMENT_RESULTS = "oscal/assessment-results.json"
COMPONENT_DEFINITION = "oscal/component-definition.json"
NS = "https://sovkit.dev/ns/oscal"
PROVISION_PREDICATE = "https://sovkit.dev/attestation/provision/v1"

_RULE_ID = re.compile(r'"([A-Z][A-Z0-9]*-[0-9]{3})"')
_TOKEN = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MappedControl(_M):
    id: str = Field(pattern=_TOKEN)
    ref: str = Field(min_length=1)
    title: str = Field(min_length=1)


class Catalog(_M):
    id: str = Field(pattern=_TOKEN)
    title: str = Field(min_length=1)
    source: str = Field(min_length=1, description="URI of the legal text or standard (no official OSCAL catalog)")
    controls: list[MappedControl] = Field(min_length=1)


class RuleMapping(_M):
    title: str = Field(min_length=1)
    controls: list[str] = Field(min_length=1)
    why: str = Field(min_length=1, description="which part of the controls the rule checks")


class Uncovered(_M):
    control: str
    reason: str = Field(min_length=1)


class ControlMapping(_M):
    """rule id -> controls over the catalogs, plus every catalog control no rule checks (with the reason)."""

    schema_: Literal["https://sovkit.dev/control-mapping/v1"] = Field(alias="schema")
    catalogs: list[Catalog] = Field(min_length=1)
    rules: dict[str, RuleMapping]
    uncovered: list[Uncovered] = []

    @model_validator(mode="after")
    def _consistent(self) -> ControlMapping:
        ids = [c.id for cat in self.catalogs for c in cat.controls]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"control ids listed twice: {dupes}")
        known = set(ids)
        bad_rules = [r for r in self.rules if not re.match(r"^[A-Z][A-Z0-9]*-[0-9]{3}$", r)]
        if bad_rules:
            raise ValueError(f"not rule ids: {bad_rules}")
        unknown = sorted({c for m in self.rules.values() for c in m.controls} - known)
        if unknown:
            raise ValueError(f"rules map to controls no catalog lists: {unknown}")
        mapped = {c for m in self.rules.values() for c in m.controls}
        listed = [u.control for u in self.uncovered]
        if len(set(listed)) != len(listed):
            raise ValueError("a control is listed as uncovered twice")
        if set(listed) - known:
            raise ValueError(f"uncovered controls no catalog lists: {sorted(set(listed) - known)}")
        if set(listed) & mapped:
            raise ValueError(f"controls both mapped and listed as uncovered: {sorted(set(listed) & mapped)}")
        silent = sorted(known - mapped - set(listed))
        if silent:
            raise ValueError(f"controls neither mapped nor listed as uncovered: {silent}")
        return self

    def control(self, control_id: str) -> tuple[Catalog, MappedControl]:
        for cat in self.catalogs:
            for c in cat.controls:
                if c.id == control_id:
                    return cat, c
        raise KeyError(control_id)


def shipped_mapping_path() -> Path:
    return policies_dir() / "mappings" / "controls.yaml"


def load_mapping(path: Path | None = None) -> ControlMapping:
    """The control mapping at ``path`` (default: the one shipped with the policy pack), validated."""
    path = path or shipped_mapping_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return ControlMapping.model_validate(data)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SovkitError(f"cannot read the control mapping {path}: {exc}", "reinstall sovkit") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SovkitError(f"control mapping {path} [{where}]: {first['msg']}",
                          "fix the mapping (docs/regulators.md)") from exc


def rule_ids(modules: Mapping[str, str]) -> list[str]:
    """Rule ids of a pack's Rego modules: every quoted ``ABC-123`` string outside the ``*_test.rego`` files."""
    found: set[str] = set()
    for name, source in modules.items():
        if name.endswith("_test.rego"):
            continue
        found.update(_RULE_ID.findall(source))
    return sorted(found)


def mapping_table(mapping: ControlMapping) -> str:
    """The mapping as the markdown table docs/regulators.md carries (a test keeps the two in sync)."""
    rows = ["| Catalog | Control | Title | Rules |", "|---|---|---|---|"]
    for cat in mapping.catalogs:
        for c in cat.controls:
            rules = sorted(r for r, m in mapping.rules.items() if c.id in m.controls)
            why = next((u.reason for u in mapping.uncovered if u.control == c.id), "")
            cell = ", ".join(rules) if rules else f"**uncovered**: {why}"
            rows.append(f"| {cat.id} | {c.ref} | {c.title} | {cell} |")
    return "\n".join(rows) + "\n"


# --- the control view ------------------------------------------------------------------------------------------

_SECTIONS = {"PRV": "models", "FW": "firmware", "RT": "runtimes"}


def _artifact_digests(input_doc: Mapping[str, Any]) -> dict[str, list[str]]:
    """resource (``models/x``) -> sha256 digests of its pinned files, from the policy input."""
    out: dict[str, list[str]] = {}
    for section in ("models", "firmware", "runtimes"):
        for item in input_doc.get(section) or []:
            if not isinstance(item, dict):
                continue
            files = list(item.get("files") or []) + list(item.get("artifacts") or [])
            if isinstance(item.get("image"), dict):
                files.append(item["image"])
            digests = sorted({f"sha256:{f['sha256']}" for f in files if isinstance(f, dict) and f.get("sha256")})
            out[f"{section}/{item.get('name')}"] = digests
    return out


def _attested(entries: Iterable[LogEntry]) -> dict[str, list[str]]:
    """artifact digest -> provision log entries ('<index> <entry digest>') whose subjects carry it."""
    out: dict[str, list[str]] = {}
    for e in entries:
        if e.predicate_type != PROVISION_PREDICATE:
            continue
        for s in e.statement.get("subject") or []:
            d = (s.get("digest") or {}).get("sha256") if isinstance(s, dict) else None
            if d:
                out.setdefault(f"sha256:{d}", []).append(f"{e.index} {e.digest}")
    return out


def _result(findings: list[Finding]) -> Literal["pass", "warn", "fail", "waived"]:
    if any(f.severity == "deny" and not f.waived for f in findings):
        return "fail"
    if any(f.severity == "deny" for f in findings):
        return "waived"
    return "warn" if any(not f.waived for f in findings) else "pass"


def control_section(findings: list[Finding], rules: list[str], mapping: ControlMapping,
                    input_doc: Mapping[str, Any], entries: Iterable[LogEntry]) -> ControlSection:
    """Each evaluated rule with its result and evidence, each control its rules map to with its status."""
    by_rule: dict[str, list[Finding]] = {}
    for f in findings:
        by_rule.setdefault(f.id, []).append(f)
    evaluated = sorted(set(rules) | set(by_rule))
    digests = _artifact_digests(input_doc)
    attested = _attested(entries)
    results: list[RuleResult] = []
    for rule in evaluated:
        fs = by_rule.get(rule, [])
        resources = sorted({f.resource for f in fs if f.resource})
        section = _SECTIONS.get(rule.split("-")[0])
        checked = sorted(r for r in digests if section and r.startswith(f"{section}/")) if section else []
        evidence = [RuleEvidence(resource=r, digests=digests[r],
                                 attestations=sorted({a for d in digests[r] for a in attested.get(d, [])},
                                                     key=lambda a: int(a.split()[0])))
                    for r in checked]
        evidence += [RuleEvidence(resource=r) for r in resources if r not in checked]
        m = mapping.rules.get(rule)
        results.append(RuleResult(rule=rule, title=m.title if m else "", result=_result(fs),
                                  controls=list(m.controls) if m else [], resources=resources, evidence=evidence))
    controls: list[ControlResult] = []
    for cat in mapping.catalogs:
        for c in cat.controls:
            mine = [r for r in results if c.id in r.controls]
            if not mine:
                continue
            bad = any(r.result in ("fail", "waived") for r in mine)
            controls.append(ControlResult(catalog=cat.id, control=c.id, ref=c.ref, title=c.title,
                                          status="not-satisfied" if bad else "satisfied",
                                          rules=[r.rule for r in mine]))
    uncovered = []
    for u in mapping.uncovered:
        cat, c = mapping.control(u.control)
        uncovered.append(UncoveredControl(catalog=cat.id, control=c.id, ref=c.ref, title=c.title, reason=u.reason))
    return ControlSection(mapping=MAPPING_COPY, rules=results, controls=controls, uncovered=uncovered)


# --- OSCAL documents -------------------------------------------------------------------------------------------


class _Ids:
    """uuid5 names under a namespace of the pack's identity: the same pack gets the same ids."""

    def __init__(self, report: AuditReport) -> None:
        key = (f"https://sovkit.dev/audit/{report.overview.site}/{report.generated_at}/"
               f"{report.policy.pack_digest}/{report.overview.inventory_digest}")
        self._ns = uuid.uuid5(uuid.NAMESPACE_URL, key)

    def __call__(self, name: str) -> str:
        return str(uuid.uuid5(self._ns, name))


def _time(report: AuditReport) -> datetime:
    return datetime.fromisoformat(report.generated_at.replace("Z", "+00:00"))


def _prop(name: str, value: str, remarks: str | None = None) -> common.Property:
    return common.Property(name=name, value=value, ns=AnyUrl(NS), remarks=remarks)


def _metadata(title: str, report: AuditReport, props: list[common.Property]) -> common.Metadata:
    return common.Metadata(title=title, last_modified=_time(report), version=report.generator,
                           oscal_version=common.OscalVersion(OSCAL_VERSION), props=props)


def _sha256_hash(value: str) -> common.Hash:
    return common.Hash(algorithm="SHA-256", value=value.removeprefix("sha256:"))


def _state(status: str) -> common.ObjectiveStatus:
    ok = status == "satisfied"
    return common.ObjectiveStatus(
        state=common.ObjectiveStatusStateValidValues.satisfied if ok else
        common.ObjectiveStatusStateValidValues.not_satisfied, reason="pass" if ok else "fail")


def assessment_results(report: AuditReport, section: ControlSection, input_sha256: str) -> ar.AssessmentResults:
    """The pack's assessment: an observation per evaluated rule, a finding per denial per mapped control, and a
    ``satisfied`` finding for each mapped control none of whose rules denied."""
    ids = _Ids(report)
    when = _time(report)
    p = report.policy
    plan = common.Resource(
        uuid=ids("resource/assessment-plan"), title="sovkit policy pack and input (the assessment plan)",
        description="The policy bundle evaluated and the exact input document it was evaluated on.",
        rlinks=[common.Rlink(href="../" + p.bundle, media_type="application/gzip"),
                common.Rlink(href="../" + (p.input or "policy/input.json"), media_type="application/json",
                             hashes=[_sha256_hash(input_sha256)])],
        props=[_prop("pack-digest", f"sha256:{p.pack_digest}")])
    observations: list[common.Observation] = []
    for r in section.rules:
        evidence = [
            common.RelevantEvidence(href="../" + (p.input or "policy/input.json"),
                                    description="the policy input the rule was evaluated on",
                                    props=[_prop("sha256", f"sha256:{input_sha256}")]),
            common.RelevantEvidence(href="../" + p.bundle, description="the policy bundle holding the rule",
                                    props=[_prop("pack-digest", f"sha256:{p.pack_digest}")]),
        ]
        for e in r.evidence:
            props = [_prop("resource", e.resource or "site")]
            props += [_prop("artifact-digest", d) for d in e.digests]
            props += [_prop("attestation-entry", a) for a in e.attestations]
            evidence.append(common.RelevantEvidence(
                href=f"../{report.attestation_log}log.jsonl" if e.attestations and report.attestation_log else None,
                description=f"{e.resource}" + (": pinned artifact digests and the attestations naming them"
                                               if e.digests else ""), props=props))
        fs = [f for f in p.findings if f.id == r.rule]
        observations.append(common.Observation(
            uuid=ids(f"observation/{r.rule}"), title=f"{r.rule}: {r.title}" if r.title else r.rule,
            description=f"sovkit policy rule {r.rule} evaluated on the site's policy input: {r.result}.",
            methods=[common.Methods.TEST], collected=when,
            props=[_prop("rule-id", r.rule), _prop("result", r.result)] + [_prop("resource", x) for x in r.resources],
            relevant_evidence=evidence,
            remarks="\n".join(f"{f.severity}{' (waived)' if f.waived else ''} {f.resource}: {f.msg}" for f in fs)
            or None))
    obs_uuid = {r.rule: ids(f"observation/{r.rule}") for r in section.rules}
    findings: list[common.Finding] = []
    rules = {r.rule: r for r in section.rules}
    for c in section.controls:
        denials = [f for f in p.findings if f.severity == "deny" and f.id in c.rules]
        for f in denials:
            findings.append(common.Finding(
                uuid=ids(f"finding/{c.control}/{f.id}/{f.resource}/{f.msg}"),
                title=f"{c.ref} ({c.catalog}): {f.id} on {f.resource}",
                description=f.msg,
                target=common.FindingTarget(type=common.FindingTargetTypeValidValues.objective_id,
                                            target_id=c.control, title=c.title, status=_state("not-satisfied")),
                props=[_prop("rule-id", f.id), _prop("resource", f.resource) if f.resource else
                       _prop("resource", "site"), _prop("waived", "true" if f.waived else "false")],
                related_observations=[common.RelatedObservation(observation_uuid=obs_uuid[f.id])],
                remarks=(f"waived: {f.waiver_reason} (until {f.waiver_expires})" if f.waived else
                         f"remediation: {f.remediation}" if f.remediation else None)))
        if not denials:
            warned = [x for x in c.rules if rules[x].result == "warn"]
            findings.append(common.Finding(
                uuid=ids(f"finding/{c.control}"), title=f"{c.ref} ({c.catalog}): no rule denied",
                description=f"every sovkit rule mapped to {c.control} passed: {', '.join(c.rules)}",
                target=common.FindingTarget(type=common.FindingTargetTypeValidValues.objective_id,
                                            target_id=c.control, title=c.title, status=_state("satisfied")),
                related_observations=[common.RelatedObservation(observation_uuid=obs_uuid[x]) for x in c.rules],
                remarks=f"warnings from: {', '.join(warned)}" if warned else None))
    result = ar.Result(
        uuid=ids("result"), title=f"sovkit audit of site {report.overview.site}",
        description=f"Policy decision: {'allowed' if p.allowed else 'denied'}; {len(p.findings)} finding(s).",
        start=when, end=when,
        props=[_prop("decision", "allowed" if p.allowed else "denied")],
        reviewed_controls=common.ReviewedControls(control_selections=[common.ControlSelections(
            include_controls=[common.SelectControlById(control_id=c.control) for c in section.controls])]),
        observations=observations or None, findings=findings or None)
    return ar.AssessmentResults(
        uuid=ids("assessment-results"),
        metadata=_metadata(f"sovkit assessment results: site {report.overview.site}", report,
                           [_prop("site", report.overview.site),
                            _prop("inventory-digest", report.overview.inventory_digest)]),
        import_ap=ar.ImportAp(href=f"#{plan.uuid}", remarks="sovkit writes no OSCAL assessment plan: the plan is "
                                                             "the policy pack and input named by this resource"),
        results=[result], back_matter=common.BackMatter(resources=[plan]))


def component_definition(report: AuditReport, section: ControlSection, mapping: ControlMapping
                         ) -> cd.ComponentDefinition:
    """The policy pack as a component: its rules (trestle's Rule_Id convention) and, per catalog, an implemented
    requirement per control listing the rules that check it."""
    ids = _Ids(report)
    props: list[common.Property] = [_prop("pack-digest", f"sha256:{report.policy.pack_digest}")]
    for i, r in enumerate(section.rules):
        group = f"rule_set_{i:03d}"
        props.append(common.Property(name="Rule_Id", value=r.rule, remarks=group))
        props.append(common.Property(name="Rule_Description", value=r.title or r.rule, remarks=group))
    implementations = []
    for cat in mapping.catalogs:
        reqs = []
        for c in cat.controls:
            mine = [r.rule for r in section.rules if c.id in r.controls]
            if not mine:
                continue
            reqs.append(cd.ImplementedRequirement(
                uuid=ids(f"requirement/{cat.id}/{c.id}"), control_id=c.id,
                description=f"{c.ref}: {c.title}. Checked in part by sovkit rules {', '.join(mine)}.",
                props=[common.Property(name="Rule_Id", value=r) for r in mine]))
        if reqs:
            implementations.append(cd.ControlImplementation(
                uuid=ids(f"implementation/{cat.id}"), source=cat.source, description=cat.title,
                implemented_requirements=reqs))
    component = cd.DefinedComponent(
        uuid=ids("component/policy-pack"), type="policy", title="sovkit policy pack",
        description="The Rego policy pack sovkit evaluates (policy/bundle.tar.gz in this pack).",
        props=props, control_implementations=implementations or None)
    return cd.ComponentDefinition(
        uuid=ids("component-definition"),
        metadata=_metadata("sovkit policy pack: component definition", report,
                           [_prop("pack-digest", f"sha256:{report.policy.pack_digest}")]), components=[component])


def write_documents(root: Path, report: AuditReport, mapping_source: Path, input_sha256: str,
                    mapping: ControlMapping) -> None:
    """Write the mapping copy and both OSCAL documents into the pack at ``root`` (report.controls must be set)."""
    if report.controls is None:
        raise SovkitError("internal: the report has no control view", "report a bug")
    (root / MAPPING_COPY).write_bytes(mapping_source.read_bytes())
    (root / "oscal").mkdir()
    for rel, doc in ((ASSESSMENT_RESULTS, assessment_results(report, report.controls, input_sha256)),
                     (COMPONENT_DEFINITION, component_definition(report, report.controls, mapping))):
        (root / rel).write_text(doc.oscal_serialize_json(pretty=True) + "\n", encoding="utf-8")


# --- verification ----------------------------------------------------------------------------------------------


def trestle_problems(path: Path, model: type[ar.AssessmentResults] | type[cd.ComponentDefinition]
                     ) -> tuple[Any, list[str]]:
    """Parse ``path`` with trestle's model and run trestle's own validators (all of `trestle validate`)."""
    rel = f"{path.parent.name}/{path.name}"
    issues = [f"{rel}: {i.message}" for i in oscal_backward_compatibility.check_file(path) if i.severity == "ERROR"]
    if issues:
        return None, issues
    try:
        doc = model.oscal_read(path)
    except Exception as exc:  # trestle raises TrestleError or pydantic errors: any is "does not parse"
        return None, [f"{rel}: not a valid OSCAL {model.__name__}: {str(exc).splitlines()[0][:300]}"]
    if doc is None:
        return None, [f"{rel} is missing"]
    validator = validator_factory.get(argparse.Namespace(mode=VAL_MODE_ALL))
    if not validator.model_is_valid(doc, True, None):
        return doc, [f"{rel}: trestle validation failed: {validator.error_msg()}"]
    return doc, []


def _props(props: list[common.Property] | None, name: str) -> list[str]:
    return [p.value for p in props or [] if p.name == name]


def check_documents(root: Path, report: AuditReport, expected: ControlSection) -> list[str]:
    """Every problem with the pack's OSCAL: trestle parsing/validation, and agreement with report.json."""
    problems: list[str] = []
    if report.controls is None:
        return ["report.json has no control view (controls): the pack was written without OSCAL"]
    if report.controls != expected:
        got = {r.rule: r for r in report.controls.rules}
        for r in expected.rules:
            mine = got.get(r.rule)
            if mine is None:
                problems.append(f"report.json controls: rule {r.rule} evaluated by the pack's bundle is missing")
            elif mine != r:
                problems.append(f"report.json controls: rule {r.rule} says {mine.result}, its findings and the "
                                f"mapping give {r.result}" if mine.result != r.result else
                                f"report.json controls: rule {r.rule} differs from its findings, mapping or evidence")
        for rule in sorted(set(got) - {r.rule for r in expected.rules}):
            problems.append(f"report.json controls: rule {rule} is not a rule of the pack")
        if report.controls.controls != expected.controls or report.controls.uncovered != expected.uncovered:
            problems.append("report.json controls: the control statuses differ from the pack's mapping and findings")
    problems += _check_results(root / ASSESSMENT_RESULTS, report, expected)
    problems += _check_component(root / COMPONENT_DEFINITION, expected)
    return problems


def _check_results(path: Path, report: AuditReport, expected: ControlSection) -> list[str]:
    doc, problems = trestle_problems(path, ar.AssessmentResults)
    if doc is None:
        return problems
    if len(doc.results) != 1:
        return [*problems, f"{ASSESSMENT_RESULTS}: {len(doc.results)} results, expected 1"]
    result = doc.results[0]
    observed: dict[str, str] = {}
    for o in result.observations or []:
        for rule in _props(o.props, "rule-id"):
            observed[rule] = (_props(o.props, "result") or ["?"])[0]
    want = {r.rule: r.result for r in expected.rules}
    for rule in sorted(set(want) | set(observed)):
        if rule not in observed:
            problems.append(f"{ASSESSMENT_RESULTS}: no observation of rule {rule}")
        elif rule not in want:
            problems.append(f"{ASSESSMENT_RESULTS}: observation of rule {rule}, which the pack does not evaluate")
        elif observed[rule] != want[rule]:
            problems.append(f"{ASSESSMENT_RESULTS}: rule {rule} observed as {observed[rule]}, report.json's "
                            f"findings give {want[rule]}")
    got: set[tuple[str, str, str, str]] = set()
    for f in result.findings or []:
        state = f.target.status.state.value if f.target.status else "none"
        rule = (_props(f.props, "rule-id") or ["-"])[0]
        resource = (_props(f.props, "resource") or ["-"])[0]
        got.add((f.target.target_id, rule, resource, state))
    expect: set[tuple[str, str, str, str]] = set()
    for c in expected.controls:
        denials = [f for f in report.policy.findings if f.severity == "deny" and f.id in c.rules]
        expect |= {(c.control, f.id, f.resource or "site", "not-satisfied") for f in denials}
        if not denials:
            expect.add((c.control, "-", "-", "satisfied"))
    for cid, rule, res, state in sorted(expect - got):
        what = f"{rule} on {res}" if rule != "-" else "no denial"
        problems.append(f"{ASSESSMENT_RESULTS}: missing finding {cid} {state} ({what})")
    for cid, rule, res, state in sorted(got - expect):
        what = f"{rule} on {res}" if rule != "-" else "no denial"
        problems.append(f"{ASSESSMENT_RESULTS}: finding {cid} {state} ({what}) disagrees with report.json")
    return problems


def _check_component(path: Path, expected: ControlSection) -> list[str]:
    doc, problems = trestle_problems(path, cd.ComponentDefinition)
    if doc is None:
        return problems
    got: set[tuple[str, str]] = set()
    rules: set[str] = set()
    for comp in doc.components or []:
        rules |= set(_props(comp.props, "Rule_Id"))
        for impl in comp.control_implementations or []:
            for req in impl.implemented_requirements:
                got |= {(req.control_id, r) for r in _props(req.props, "Rule_Id")}
    want = {(c, r.rule) for r in expected.rules for c in r.controls}
    if rules != {r.rule for r in expected.rules}:
        problems.append(f"{COMPONENT_DEFINITION}: rules {sorted(rules ^ {r.rule for r in expected.rules})} differ "
                        "from the pack's")
    for c, r in sorted(want - got):
        problems.append(f"{COMPONENT_DEFINITION}: control {c} does not name rule {r}, as the mapping does")
    for c, r in sorted(got - want):
        problems.append(f"{COMPONENT_DEFINITION}: control {c} names rule {r}, the mapping does not")
    return problems


def input_sha256(path: Path) -> str:
    return sha256_file(path)
