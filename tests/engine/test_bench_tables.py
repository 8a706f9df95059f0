"""The README's performance tables come from the bench JSON, with the machine named and missing peers said."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.bench_tables import END, START, main, render, replace_block, tables


def _row(system: str, quant: str, tok_s: float, **extra: object) -> dict:
    base = {"system": system, "quant": quant, "batch": 1, "threads": 1, "decode_tok_s": tok_s}
    return {**base, "prefill_tok_s": 500.0, "peak_rss_mb": 900.0, **extra}


REPORT = {
    "cpu": "AMD EPYC",
    "torch": "2.13.0+cpu",
    "model": "models/smollm2-135m-instruct",
    "prompt_len": 512,
    "new_tokens": 128,
    "repeats": 3,
    "peers_missing": {"hf": "not asked"},
    "results": [
        _row("tollgate", "none", 40.0),
        _row("llamacpp", "none", 50.0, gguf_type="F32"),
        _row("tollgate", "int8", 60.0),
        _row("tollgate", "int4", 70.0, error="RuntimeError: boom"),
    ],
}


def test_tables_name_the_machine_and_give_ratios() -> None:
    text = tables(REPORT)
    assert "AMD EPYC" in text and "torch 2.13.0+cpu" in text
    assert "| fp32 | 1 | 1 | 40.0 | 50.0 (F32) | **0.80×** |" in text
    assert "| int8 | 1 | 1 | 60.0 | — |" in text
    assert "int4" not in text  # a failed row is not shown as a number
    assert "hf rows missing: not asked" in text


def test_readme_block_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{START}\nold\n{END}\nafter\n")
    report = tmp_path / "bench.json"
    report.write_text(json.dumps(REPORT))
    assert main([str(report), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(f"before\n{START}\nMeasured on AMD EPYC") and text.endswith(f"{END}\nafter\n")
    assert "old" not in text


def test_a_readme_without_markers_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bench-tables"):
        replace_block("no markers here", "x")
    report = tmp_path / "bench.json"
    report.write_text(json.dumps(REPORT))
    readme = tmp_path / "README.md"
    readme.write_text("nothing")
    assert main([str(report), "--readme", str(readme)]) == 2
    assert readme.read_text() == "nothing"


def test_readme_tables_are_the_committed_measurements() -> None:
    root = Path(__file__).parents[2]
    text = (root / "README.md").read_text()
    for name in ("bench_engine.json", "serve_vs_llamacpp.json"):
        report = json.loads((root / "docs" / "bench" / name).read_text())
        assert render(report, text) == text, f"README tables differ from docs/bench/{name}: run engine.bench_tables"
