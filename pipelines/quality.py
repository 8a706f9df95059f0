"""Stage `quality`: perplexity on the eval text, after Great Expectations checks the text itself.

`python -m pipelines.quality` writes metrics/quality.json (namespace `quality`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, task

from pipelines.common import METRICS, stage_cli, write_json
from pipelines.config import load_params

MIN_LINES = 100


@task
def validate_text(path: Path, min_tokens: int) -> dict[str, Any]:
    """The eval text exists, has enough non-empty lines and no control characters; raises with the reason."""
    import great_expectations.expectations as gxe
    import pandas as pd

    from gates.validate import ephemeral_batch

    if not path.is_file():
        raise FileNotFoundError(f"{path}: eval text not found")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    frame = pd.DataFrame({"line": lines})
    batch = ephemeral_batch(frame)
    checks = {
        f"at least {MIN_LINES} non-empty lines": gxe.ExpectTableRowCountToBeBetween(min_value=MIN_LINES),
        "no control characters": gxe.ExpectColumnValuesToNotMatchRegex(column="line", regex=r"[\x00-\x08\x0b-\x1f]"),
    }
    failed = [name for name, expectation in checks.items() if not batch.validate(expectation).success]
    if failed:
        raise ValueError(f"{path}: eval text failed validation: {', '.join(failed)}")
    return {"lines": len(lines), "chars": sum(map(len, lines)), "min_tokens": min_tokens}


@task
def perplexity(model_path: Path, text: Path, max_tokens: int, context: int, threads: int) -> dict[str, Any]:
    """Perplexity of the model on the first `max_tokens` tokens of the text."""
    import torch

    from engine.eval import evaluate
    from engine.loader import load_model, load_tokenizer

    torch.set_num_threads(threads)
    ids = load_tokenizer(model_path).encode(text.read_text(encoding="utf-8"), add_special_tokens=False)[:max_tokens]
    return evaluate(load_model(model_path), ids, context)


@flow(name="quality")
def quality_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Validate the eval text, then measure perplexity with the profile's token budget."""
    p = load_params(Path(params_path))
    text = Path(p.data.eval_text)
    facts = validate_text(text, p.profile.quality.max_tokens)
    result = perplexity(
        Path(p.model.path), text, p.profile.quality.max_tokens, p.profile.quality.context, p.profile.threads
    )
    metrics = {"quality": {**result, "quant": p.quant.name, "text_lines": facts["lines"]}}
    write_json(METRICS / "quality.json", metrics)
    return metrics


if __name__ == "__main__":
    sys.exit(stage_cli(quality_flow, __doc__))
