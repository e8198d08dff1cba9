"""Render the audit report as one self-contained, printable HTML page (Jinja2, autoescaped).

Self-contained means no external fonts, scripts, images or styles: the page
must open on an air-gapped regulator laptop exactly as it was signed.
"""

from __future__ import annotations

from functools import cache

import jinja2

from sovkit.audit.model import AuditReport
from sovkit.resources import templates_dir

TEMPLATE = "report.html.j2"


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "audit")),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(report: AuditReport) -> str:
    return _env().get_template(TEMPLATE).render(r=report)
