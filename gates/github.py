"""The verdict where a GitHub reviewer looks: the run's summary page and annotations, no download needed.

`python -m gates github reports/decision.json` appends the scenario, its top reasons and every failing or
INVALID criterion as a markdown table to `$GITHUB_STEP_SUMMARY` (stdout without it), and prints one workflow
command per such criterion: `::error` for a FAIL of severity critical, blocker or major, `::warning` otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gates.report import cells, summary_lines

SEVERE = ("critical", "blocker", "major")


def _escape(text: str, prop: bool = False) -> str:
    """GitHub's workflow-command escaping (properties also escape `:` and `,`)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def flagged(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The criteria a reviewer must read: every FAIL and INVALID, most severe first."""
    order = {s: i for i, s in enumerate((*SEVERE, "minor"))}
    bad = [c for c in doc["checks"] if c["status"] in ("FAIL", "INVALID")]
    return sorted(bad, key=lambda c: (c["status"] != "FAIL", order.get(c["severity"], len(order))))


def summary_markdown(doc: dict[str, Any]) -> str:
    """The scenario, its reasons, and a table of the flagged criteria."""
    head, *reasons = summary_lines(doc)
    lines = [f"## Release gate: {head}", "", *[f"- {r.strip()[2:]}" for r in reasons], ""]
    rows = flagged(doc)
    if rows:
        lines += ["| status | severity | criterion | measured | needs |", "|---|---|---|---|---|"]
        for c in rows:
            status, what, measured, basis, needs, *_ = cells(c)
            measured = f"{measured} [{basis}]" if basis else measured
            lines.append(f"| {status} | {c['severity']} | {what.replace('|', '/')} | {measured} | {needs} |")
    return "\n".join(lines) + "\n"


def annotations(doc: dict[str, Any]) -> list[str]:
    """One `::error` / `::warning` workflow command per flagged criterion."""
    out = []
    for c in flagged(doc):
        level = "error" if c["status"] == "FAIL" and c["severity"] in SEVERE else "warning"
        _, what, measured, _, needs, *_ = cells(c)
        title = _escape(f"{c['status']} {c['id']}", prop=True)
        out.append(f"::{level} title={title}::{_escape(f'{what}: measured {measured}, needs {needs}')}")
    return out


def publish(decision: Path) -> None:
    """Write the summary (to $GITHUB_STEP_SUMMARY when set) and print the annotations."""
    doc = json.loads(decision.read_text())
    markdown = summary_markdown(doc)
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with Path(target).open("a") as f:
            f.write(markdown)
    else:
        print(markdown)
    print("\n".join(annotations(doc)))
