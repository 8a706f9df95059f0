"""The release report: decision.json, then a Markdown and an HTML page (header and summary, then every criterion).

Every criterion is listed, those outside the profile too (with what was measured, if anything). Statuses are
words with a colour and an inline SVG mark, never emoji (emoji render as empty boxes on machines without an emoji
font). The HTML page is one self-contained file: inline CSS, plots as data URIs, no script, no web font.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from gates.changes import change_lines, changes
from gates.criteria import DIMENSIONS
from gates.decision import Decision
from gates.evaluate import CheckResult
from gates.provenance import git_dirty, git_head, now_utc

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}
.badge{color:#fff;padding:.2em .6em;border-radius:.3em}
table{border-collapse:collapse;width:100%;font-size:.85em}
td,th{border:1px solid #ddd;padding:.3em;vertical-align:top}
tr.FAIL{background:#ffebe9}tr.INVALID{background:#fff8c5}tr.PASS{background:#dafbe1}tr.NOT_IN_PROFILE{color:#57606a}
img{max-width:100%}
.status{white-space:nowrap;font-weight:600}.status svg{vertical-align:-2px;margin-right:.3em}
"""
# A mark per status, drawn in SVG so it needs no font: tick, cross, exclamation, dash.
MARKS = {
    "PASS": ("#1a7f37", "<path d='M3 7l3 3 5-6' stroke='#fff' stroke-width='2' fill='none'/>"),
    "FAIL": ("#cf222e", "<path d='M4 4l6 6M10 4l-6 6' stroke='#fff' stroke-width='2'/>"),
    "INVALID": ("#9a6700", "<path d='M7 3v5M7 10v1.5' stroke='#fff' stroke-width='2'/>"),
    "NOT_IN_PROFILE": ("#57606a", "<path d='M4 7h6' stroke='#fff' stroke-width='2'/>"),
}
COLUMNS = ["status", "check", "measured", "basis", "needs", "margin", "n", "note"]


def decision_document(
    decision: Decision,
    results: list[CheckResult],
    gate: dict[str, Any],
    evidence: dict[str, Any],
    context: dict[str, Any],
) -> dict[str, Any]:
    """The decision.json document."""
    return {
        "scenario": decision.scenario,
        "summary": decision.summary,
        "counts": decision.counts,
        "top_reasons": decision.top_reasons(),
        "blockers": [r.id for r in decision.blockers],
        "gate": gate,
        "evidence": evidence,
        "context": context,
        "checks": [r.to_dict() for r in results],
    }


def _fmt(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.4g}"


def cells(r: dict[str, Any]) -> list[str]:
    """One criterion as the report's columns (from a decision.json check)."""
    unit = r["unit"]
    measured = _fmt(r["value"]) + (f" {unit}" if r["value"] is not None and unit else "")
    margin = "" if r["margin"] is None else f"{r['margin']:+.4g}"
    return [
        r["status"],
        f"{r['id']}: {r['description']}",
        measured,
        r.get("basis") or "",
        f"{r['comparator']} {r['threshold']:g} {unit}".strip(),
        margin,
        "" if r["n"] is None else str(r["n"]),
        r["note"],
    ]


def header_lines(doc: dict[str, Any]) -> list[str]:
    """Profile, spec, commit, hardware, baseline and overrides: what the verdict rests on."""
    g, ctx = doc["gate"], doc["context"]
    shas = sorted({str(e["provenance"].get("git_sha", "?"))[:10] for e in doc["evidence"].values()})
    hardware = next((e["provenance"].get("hardware") for e in doc["evidence"].values() if e["provenance"]), None)
    baseline = g["baseline"]
    return [
        f"profile {g['profile']} (min samples {g['min_samples']}, judges >= {g['min_evaluated_pct']:g}% of criteria)",
        f"model {ctx.get('model', g.get('model'))}, quant {ctx.get('quant', '?')}, cluster {ctx.get('cluster', '?')}",
        f"spec {g['spec']} sha256 {g['spec_sha256'][:12]}",
        f"decided at git {str(g.get('git_sha', '?'))[:10]}{' (dirty tree)' if g.get('git_dirty') else ''}"
        f" on {g.get('created', '?')}; evidence from git {', '.join(shas) or 'none'}",
        f"hardware {json.dumps(hardware) if hardware else 'unknown'}",
        f"baseline {baseline['path'] + ' from git ' + str(baseline.get('git_sha', '?'))[:10] if baseline else 'none'}",
        f"overrides: {'; '.join(g['overrides']) if g['overrides'] else 'none'}",
    ]


def markdown(doc: dict[str, Any], plots: list[Path]) -> str:
    """release_report.md: header and summary first, then one table per dimension with every criterion."""
    counts = doc["counts"]
    out = [
        f"# Release gate: Scenario {doc['scenario']}",
        "",
        f"**{doc['summary']}.**",
        "",
        *[f"- {line}" for line in header_lines(doc)],
        *[f"- {label}: <{url}>" for label, url in link_lines(doc)],
        "",
        f"PASS {counts['PASS']} · FAIL {counts['FAIL']} · INVALID {counts['INVALID']} (no evidence: never green) · "
        f"NOT_IN_PROFILE {counts['NOT_IN_PROFILE']} (listed below with what was measured)",
        "",
        "## Top reasons",
        "",
        *([f"- {reason}" for reason in doc["top_reasons"]] or ["- none: every criterion this profile judges passed"]),
        "",
        "## Changed since the previous decision",
        "",
        *[f"- {line}" for line in change_lines(doc.get("changes"))],
    ]
    for dim in DIMENSIONS:
        rows = [c for c in doc["checks"] if c["dimension"] == dim]
        if not rows:
            continue
        out += ["", f"## {dim.capitalize()}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells(r)) + " |" for r in rows]
    if plots:
        out += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(out) + "\n"


def status_html(status: str) -> str:
    """A status as its word in its colour after an inline SVG mark."""
    colour, mark = MARKS.get(status, MARKS["NOT_IN_PROFILE"])
    svg = (
        "<svg width='14' height='14' viewBox='0 0 14 14' aria-hidden='true'>"
        f"<circle cx='7' cy='7' r='7' fill='{colour}'/>{mark}</svg>"
    )
    return f"<span class='status' style='color:{colour}'>{svg}{html.escape(status)}</span>"


def link_lines(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, URL) of the runs behind this decision: the MLflow run and the Prefect flow run, when known."""
    links = doc["context"].get("links") or {}
    return [(label, url) for label, url in links.items() if url]


def _html_sections(doc: dict[str, Any]) -> str:
    """One table per dimension, each row led by its status mark."""
    sections = []
    for dim in DIMENSIONS:
        rows = [c for c in doc["checks"] if c["dimension"] == dim]
        if not rows:
            continue
        body = "".join(
            f"<tr class='{r['status']}'><td>{status_html(r['status'])}</td>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r)[1:])
            + "</tr>"
            for r in rows
        )
        head = "".join(f"<th>{c}</th>" for c in COLUMNS)
        sections.append(f"<h2 id='{dim}'>{dim.capitalize()}</h2><table><tr>{head}</tr>{body}</table>")
    return "".join(sections)


def html_page(doc: dict[str, Any], plots: list[Path]) -> str:
    """release_report.html: the same, self-contained (plots inlined)."""
    colour = {"A": "#1a7f37", "B": "#9a6700", "C": "#cf222e"}.get(doc["scenario"], "#57606a")
    images = "".join(
        f"<figure><img alt='{p.stem}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
        f"<figcaption>{p.stem}</figcaption></figure>"
        for p in plots
    )
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in doc["top_reasons"]) or "<li>none</li>"
    header = "".join(f"<li>{html.escape(line)}</li>" for line in header_lines(doc))
    header += "".join(
        f"<li>{label}: <a href='{html.escape(url)}'>{html.escape(url)}</a></li>" for label, url in link_lines(doc)
    )
    counts = " · ".join(f"{status_html(k)} {v}" for k, v in doc["counts"].items())
    changed = "".join(f"<li>{html.escape(line)}</li>" for line in change_lines(doc.get("changes")))
    title = f"Release gate: Scenario {doc['scenario']}"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{STYLE}.badge{{background:{colour}}}</style>
</head><body><h1>Release gate: <span class="badge" id="verdict">Scenario {doc["scenario"]}</span></h1>
<p><b>{html.escape(doc["summary"])}.</b></p><ul>{header}</ul><p>{counts}</p>
<h2>Top reasons</h2><ul>{reasons}</ul><h2 id="changes">Changed since the previous decision</h2><ul>{changed}</ul>
{_html_sections(doc)}{images}</body></html>
"""


def write_reports(
    out_dir: Path,
    decision: Decision,
    results: list[CheckResult],
    gate: dict[str, Any],
    evidence: dict[str, Any],
    context: dict[str, Any],
    plots: list[Path],
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stamp the decision with its time and commit, write decision.json and both reports; returns the document."""
    gate = {**gate, "created": now_utc(), "git_sha": git_head(), "git_dirty": git_dirty()}
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = decision_document(decision, results, gate, evidence, context)
    doc["changes"] = changes(previous, doc) if previous else None
    (out_dir / "decision.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / "release_report.md").write_text(markdown(doc, plots))
    (out_dir / "release_report.html").write_text(html_page(doc, plots))
    return doc


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The scenario line and its top reasons, for terminals and logs."""
    c = doc["counts"]
    head = f"Scenario {doc['summary']} (PASS {c['PASS']}, FAIL {c['FAIL']}, INVALID {c['INVALID']})"
    return [head, *[f"  - {r}" for r in doc["top_reasons"]]]


def full_listing(doc: dict[str, Any]) -> list[str]:
    """Every criterion, one line each: status, id, measured value, basis, threshold (for `gates show`)."""
    lines = [*summary_lines(doc), "", *header_lines(doc), ""]
    for r in doc["checks"]:
        status, _, measured, basis, needs, _, n, _ = cells(r)
        extra = f" [{basis}]" if basis else ""
        lines.append(f"{status:<15} {r['id']:<45} {measured}{extra}, needs {needs}" + (f" (n={n})" if n else ""))
    return lines
