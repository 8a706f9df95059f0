"""The release report: decision.json, then a Markdown and an HTML page (summary first, then each dimension)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from gates.decision import Decision
from gates.evaluate import NOT_IN_PROFILE, CheckResult

DIMENSIONS = ["performance", "quality", "features", "reliability", "compatibility", "release"]
STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}
.badge{color:#fff;padding:.2em .6em;border-radius:.3em}
table{border-collapse:collapse;width:100%;font-size:.9em}
td,th{border:1px solid #ddd;padding:.3em;vertical-align:top}
tr.FAIL{background:#ffebe9}tr.INVALID{background:#fff8c5}tr.PASS{background:#dafbe1}img{max-width:100%}
"""
ICONS = {"PASS": "✅", "FAIL": "❌", "INVALID": "⚠️", "NOT_IN_PROFILE": "·"}


def decision_document(decision: Decision, results: list[CheckResult], context: dict[str, Any]) -> dict[str, Any]:
    """The decision.json document."""
    return {
        "scenario": decision.scenario,
        "summary": decision.summary,
        "counts": decision.counts,
        "top_reasons": decision.top_reasons(),
        "blockers": [r.id for r in decision.blockers],
        "context": context,
        "checks": [r.to_dict() for r in results],
    }


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _table(rows: list[CheckResult]) -> list[str]:
    lines = ["| | check | measured | needs | margin | n | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        needs = f"{r.comparator} {r.threshold:g} {r.unit}".strip()
        lines.append(
            f"| {ICONS[r.status]} {r.status} | `{r.id}` {r.description} | {_fmt(r.value)} {r.unit} | {needs} "
            f"| {_fmt(r.margin)} | {r.n if r.n is not None else ''} | {r.note} |"
        )
    return lines


def markdown(doc: dict[str, Any], results: list[CheckResult], plots: list[Path]) -> str:
    """release_report.md: summary first, then one table per dimension."""
    ctx, counts = doc["context"], doc["counts"]
    out = [
        f"# Release gate: Scenario {doc['scenario']}",
        "",
        f"**{doc['summary']}.** Profile `{ctx.get('profile')}`, model `{ctx.get('model')}`, "
        f"git `{ctx.get('git_sha', '?')[:10]}`, {ctx.get('timestamp', '')}.",
        "",
        f"PASS {counts['PASS']} · FAIL {counts['FAIL']} · INVALID {counts['INVALID']} (no evidence: never green) · "
        f"not in this profile {counts['NOT_IN_PROFILE']}",
        "",
        "## Top reasons",
        "",
        *([f"- {reason}" for reason in doc["top_reasons"]] or ["- none: every evaluated criterion passed"]),
    ]
    for dim in DIMENSIONS:
        rows = [r for r in results if r.dimension == dim and r.status != NOT_IN_PROFILE]
        skipped = sum(r.dimension == dim and r.status == NOT_IN_PROFILE for r in results)
        out += ["", f"## {dim.capitalize()}", ""]
        out += _table(rows) if rows else ["No criterion of this dimension is evaluated by this profile."]
        if skipped:
            out += ["", f"{skipped} more criteria are evaluated only by other profiles (see decision.json)."]
    if plots:
        out += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(out) + "\n"


def html_page(doc: dict[str, Any], results: list[CheckResult], plots: list[Path]) -> str:
    """release_report.html: the same, self-contained (plots inlined)."""
    colour = {"A": "#1a7f37", "B": "#9a6700", "C": "#cf222e"}[doc["scenario"]]
    rows_by_dim = []
    for dim in DIMENSIONS:
        rows = [r for r in results if r.dimension == dim and r.status != NOT_IN_PROFILE]
        body = "".join(
            f"<tr class='{r.status}'><td>{ICONS[r.status]} {r.status}</td><td><code>{html.escape(r.id)}</code>"
            f"<br>{html.escape(r.description)}</td><td>{_fmt(r.value)} {html.escape(r.unit)}</td>"
            f"<td>{html.escape(r.comparator)} {r.threshold:g}</td><td>{_fmt(r.margin)}</td>"
            f"<td>{'' if r.n is None else r.n}</td><td>{html.escape(r.note)}</td></tr>"
            for r in rows
        )
        table = (
            f"<table><tr><th></th><th>check</th><th>measured</th><th>needs</th><th>margin</th><th>n</th>"
            f"<th>note</th></tr>{body}</table>"
            if rows
            else "<p>No criterion of this dimension is evaluated by this profile.</p>"
        )
        rows_by_dim.append(f"<h2>{dim.capitalize()}</h2>{table}")
    images = "".join(
        f"<figure><img alt='{p.stem}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
        f"<figcaption>{p.stem}</figcaption></figure>"
        for p in plots
    )
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in doc["top_reasons"]) or "<li>none</li>"
    ctx = doc["context"]
    sha = html.escape(str(ctx.get("git_sha", "?"))[:10])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Release gate: Scenario {doc["scenario"]}</title>
<style>{STYLE}.badge{{background:{colour}}}</style>
</head><body><h1>Release gate: <span class="badge">Scenario {doc["scenario"]}</span></h1>
<p><b>{html.escape(doc["summary"])}.</b> Profile <code>{html.escape(str(ctx.get("profile")))}</code>,
model <code>{html.escape(str(ctx.get("model")))}</code>, git <code>{sha}</code>.</p>
<p>{" · ".join(f"{k} {v}" for k, v in doc["counts"].items())}</p>
<h2>Top reasons</h2><ul>{reasons}</ul>{"".join(rows_by_dim)}{images}</body></html>
"""


def write_reports(
    out_dir: Path, decision: Decision, results: list[CheckResult], context: dict[str, Any], plots: list[Path]
) -> dict[str, Any]:
    """Write decision.json and both reports; returns the document."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = decision_document(decision, results, context)
    (out_dir / "decision.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / "release_report.md").write_text(markdown(doc, results, plots))
    (out_dir / "release_report.html").write_text(html_page(doc, results, plots))
    return doc


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The scenario line and its top reasons, for terminals and logs."""
    c = doc["counts"]
    head = f"Scenario {doc['scenario']}: {doc['summary']} (PASS {c['PASS']}, FAIL {c['FAIL']}, INVALID {c['INVALID']})"
    return [head, *[f"  - {r}" for r in doc["top_reasons"]]]
