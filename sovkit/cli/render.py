"""Render plans for people (Terraform-like ``+ ~ -`` lines); machines get ``PlanView`` (``--json``).

A big plan (more than :data:`BIG_PLAN` changes) is shown as a summary — counts per action and per rack, then
the first few changes — so 10,000 hosts stay readable; ``--detail`` lists every change, grouped per rack.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.text import Text

from sovkit.api import Change, Plan

SYMBOL = {"create": "+", "update": "~", "delete": "-"}
_STYLE = {"create": "green", "update": "yellow", "delete": "red"}
#: above this many changes `sovkit plan` prints the summary form unless --detail is given
BIG_PLAN = 50
#: how many changes the summary form shows
FIRST_CHANGES = 10
NO_RACK = "(no rack)"


def _change_line(c: Change, indent: str) -> Text:
    line = Text(indent)
    line.append(f"{SYMBOL[c.action]} ", style=_STYLE[c.action])
    line.append(f"{c.component} {c.name}", style=_STYLE[c.action])
    line.append(f": {c.reason}")
    return line


def _host_lines(plan: Plan, hosts: Iterable[str], indent: str = "  ") -> list[Text]:
    lines: list[Text] = []
    for host in hosts:
        lines.append(Text(f"{indent}{host}", style="bold"))
        lines.extend(_change_line(c, indent + "  ") for c in plan.for_host(host))
    return lines


def plan_lines(plan: Plan, title: str = "") -> list[Text]:
    lines: list[Text] = [Text(title, style="bold")] if title else []
    return lines + _host_lines(plan, plan.hosts())


def plan_text(plan: Plan, title: str = "") -> Text:
    """All of :func:`plan_lines` as one Text: printing it once is ~3x cheaper than line by line on big plans."""
    return Text("\n").join(plan_lines(plan, title))


def _counts(changes: Iterable[Change]) -> dict[str, int]:
    counts = {"create": 0, "update": 0, "delete": 0}
    for c in changes:
        counts[c.action] += 1
    return counts


def _describe(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} to {action}" for action, n in counts.items() if n)


def by_rack(plan: Plan, racks: Mapping[str, str]) -> dict[str, list[str]]:
    """Rack -> the plan's hosts on it, both in plan order (a host the inventory does not place is under NO_RACK)."""
    out: dict[str, list[str]] = {}
    for host in plan.hosts():
        out.setdefault(racks.get(host, NO_RACK), []).append(host)
    return out


def _rack_line(plan: Plan, rack: str, hosts: list[str], indent: str) -> Text:
    counts = _counts(c for h in hosts for c in plan.for_host(h))
    total = sum(counts.values())
    return Text(f"{indent}rack {rack}: {total} change(s) on {len(hosts)} host(s) ({_describe(counts)})",
                style="bold")


def plan_overview(plan: Plan, racks: Mapping[str, str], title: str = "") -> Text:
    """The summary form: totals, one line per rack, then the first :data:`FIRST_CHANGES` changes."""
    grouped = by_rack(plan, racks)
    lines: list[Text] = [Text(title, style="bold")] if title else []
    lines.append(Text(f"  {len(plan.changes)} change(s) on {len(plan.hosts())} host(s) in {len(grouped)} rack(s): "
                      f"{_describe(plan.summary())}."))
    lines.append(Text("  Per rack:"))
    lines.extend(_rack_line(plan, rack, hosts, "    ") for rack, hosts in grouped.items())
    shown = plan.changes[:FIRST_CHANGES]
    lines.append(Text(f"  First {len(shown)} change(s):"))
    hosts = list(dict.fromkeys(c.host for c in shown))
    for host in hosts:
        lines.append(Text(f"    {host}", style="bold"))
        lines.extend(_change_line(c, "      ") for c in shown if c.host == host)
    lines.append(Text(f"  … and {len(plan.changes) - len(shown)} more: `sovkit plan --detail` shows every change, "
                      "grouped per rack."))
    return Text("\n").join(lines)


def plan_detail(plan: Plan, racks: Mapping[str, str], title: str = "") -> Text:
    """Every change, grouped per rack (``--detail``): a rack line with its counts, then its hosts' changes."""
    lines: list[Text] = [Text(title, style="bold")] if title else []
    for rack, hosts in by_rack(plan, racks).items():
        lines.append(_rack_line(plan, rack, hosts, "  "))
        lines.extend(_host_lines(plan, hosts, "    "))
    return Text("\n").join(lines)


def summary_line(plan: Plan) -> str:
    s = plan.summary()
    if plan.empty:
        return "No changes. The hosts match the inventory."
    return f"Plan: {s['create']} to create, {s['update']} to update, {s['delete']} to delete."
