"""Great Expectations checks on metrics tables before the gate reads them: no NaN, units in range, samples."""

from __future__ import annotations

import logging
import math
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from gates.evaluate import Evidence

# (key suffix, lowest, highest) that a metric with that unit must respect; a key takes the first suffix it ends with
UNIT_RANGES = [
    ("loss_pct", -100.0, 1e15),  # relative perplexity change: negative when quantization helps, unbounded above
    ("quality_pct", 0.0, 1e6),  # quality relative to a baseline: above 100 when the candidate does better
    ("overhead_mb", -1e9, 1e9),  # memory per node beyond a baseline's: negative when a node holds less
    ("_pct", 0.0, 100.0),
    ("_ms", 0.0, 1e9),
    ("_s", 0.0, 1e9),
    ("_mb", 0.0, 1e9),
    ("_bytes", 0.0, 1e15),
    ("tok_s", 0.0, 1e9),
    ("_hours", 0.0, 1e9),
]


STATISTICS = ("p50", "p95", "p99", "mean")


def unit_key(key: str) -> str:
    """The part of a dotted key that names the unit: `latency.itl_ms.p95` -> `itl_ms`."""
    parts = key.split(".")
    return parts[-2] if len(parts) > 1 and parts[-1] in STATISTICS else parts[-1]


def _batch_definition() -> Any:
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return (
        ctx.data_sources.add_pandas("tables").add_dataframe_asset("table").add_batch_definition_whole_dataframe("all")
    )


def ephemeral_batch(frame: Any) -> Any:
    """A GX batch over a pandas DataFrame, in a throw-away context (nothing written to disk)."""
    return _batch_definition().get_batch(batch_parameters={"dataframe": frame})


def _failed_keys(result: Any) -> list[str]:
    rows = result.result.get("unexpected_index_list") or []
    return [row["key"] for row in rows if isinstance(row, dict) and "key" in row]


def _tables(frame: Any) -> list[tuple[Any, str, Any]]:
    """(table, reason, expectation) triples: finiteness and sample counts on all rows, unit ranges by suffix."""
    tables = [
        (frame, "value is NaN or infinite", gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True])),
        (frame, "sample count below 1", gxe.ExpectColumnValuesToBeBetween(column="n", min_value=1)),
    ]
    finite = frame[frame.finite]
    units = finite.unit_key.map(lambda key: next((s for s, _, _ in UNIT_RANGES if key.endswith(s)), None))
    for suffix, low, high in UNIT_RANGES:
        part = finite[units == suffix].reset_index(drop=True)
        if len(part):
            expectation = gxe.ExpectColumnValuesToBeBetween(column="value", min_value=low, max_value=high)
            tables.append((part, f"{suffix} value outside [{low:g}, {high:g}]", expectation))
    return tables


def validate_evidence(evidence: dict[str, Evidence], keys_by_file: dict[str, list[str]]) -> dict[str, str]:
    """Reasons by metric key for every value that failed an expectation; also marks them on the evidence."""
    if not keys_by_file:
        return {}
    batch_def = _batch_definition()
    fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": ["key"]}
    reasons: dict[str, str] = {}
    for source, keys in keys_by_file.items():
        values = [evidence[k].value for k in keys]
        frame = pd.DataFrame(
            {
                "key": keys,
                "unit_key": [unit_key(k) for k in keys],
                "value": values,
                "finite": [v is not None and math.isfinite(v) for v in values],
                "n": [evidence[k].n if evidence[k].n is not None else 1 for k in keys],
            }
        )
        for table, reason, expectation in _tables(frame):
            result = batch_def.get_batch(batch_parameters={"dataframe": table}).validate(expectation, result_format=fmt)
            if not result.success:
                for key in _failed_keys(result) or list(table.key):
                    reasons.setdefault(key, f"{source}: {reason}")
    for key, reason in reasons.items():
        evidence[key].invalid_reason = reason
    return reasons
