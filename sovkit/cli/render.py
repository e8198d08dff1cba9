"""Render plans for people (Terraform-like ``+ ~ -`` lines); machines get ``PlanView`` (``--json``)."""

from __future__ import annotations

from rich.text import Text

from sovkit.api import Plan

SYMBOL = {"create": "+", "update": "~", "delete": "-"}
_STYLE = {"create": "green", "update": "yellow", "delete": "red"}


def plan_lines(plan: Plan, title: str = "") -> list[Text]:
    lines: list[Text] = []
    if title:
        lines.append(Text(title, style="bold"))
    for host in plan.hosts():
        lines.append(Text(f"  {host}", style="bold"))
        for c in plan.for_host(host):
            line = Text("    ")
            line.append(f"{SYMBOL[c.action]} ", style=_STYLE[c.action])
            line.append(f"{c.component} {c.name}", style=_STYLE[c.action])
            line.append(f": {c.reason}")
            lines.append(line)
    return lines


def plan_text(plan: Plan, title: str = "") -> Text:
    """All of :func:`plan_lines` as one Text: printing it once is ~3x cheaper than line by line on big plans."""
    return Text("\n").join(plan_lines(plan, title))


def summary_line(plan: Plan) -> str:
    s = plan.summary()
    if plan.empty:
        return "No changes. The hosts match the inventory."
    return f"Plan: {s['create']} to create, {s['update']} to update, {s['delete']} to delete."

