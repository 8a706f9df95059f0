"""Stage `quality`: is the engine right? Perplexity, greedy output and the served API against references.

`python -m pipelines quality` writes metrics/quality.json (namespace `quality`), for the pipeline's model with
its `quant`:
- `perplexity` on the eval text (after Great Expectations checks the text) and `perplexity_drift_pct`, the
  absolute relative change against the transformers reference for the same tokens and context;
- `greedy.token_agreement_pct`: greedy continuations of the reference prompts, token by token, against the
  transformers references (EOS suppressed on both sides);
- `served.match_pct`: the same prompts through a live `engine.server` (OpenAI /v1/completions, temperature 0)
  give the same text as the offline engine;
- `lm_eval`: lm-evaluation-harness (`local-completions`, echo + logprobs scoring) computes the word perplexity
  of the eval text's first articles through that server, and the engine computes the same windows in-process
  (engine.lm_eval_task); `disagreement_pct` between the two is a correctness check.
References come from data/references/<model>.json (`python -m pipelines references`); a model without a
committed one is compared with a reference computed now (`reference.committed` = 0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import great_expectations.expectations as gxe
import pandas as pd
import torch
from prefect import flow, get_run_logger, task

from engine import LLM, SamplingParams
from engine.eval import score
from gates.validate import ephemeral_batch
from pipelines.common import now_utc, stage_run_name, write_metrics
from pipelines.config import TollgateConf, load_params
from pipelines.references import build_reference, eval_ids, perplexity_key, reference_path
from pipelines.served_quality import lm_eval_agreement, offline_lm_eval, served_checks

MIN_LINES = 100


@task
def validate_text(path: Path) -> int:
    """The eval text exists, has enough non-empty lines and no control characters; raises with the reason."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: eval text not found")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    batch = ephemeral_batch(pd.DataFrame({"line": lines}))
    checks = {
        f"at least {MIN_LINES} non-empty lines": gxe.ExpectTableRowCountToBeBetween(min_value=MIN_LINES),
        "no control characters": gxe.ExpectColumnValuesToNotMatchRegex(column="line", regex=r"[\x00-\x08\x0b-\x1f]"),
    }
    failed = [name for name, expectation in checks.items() if not batch.validate(expectation).success]
    if failed:
        raise ValueError(f"{path}: eval text failed validation: {', '.join(failed)}")
    return len(lines)


@task
def reference(p: TollgateConf) -> tuple[dict[str, Any], bool]:
    """The committed reference when it covers this profile's eval setting, else one computed now."""
    path = reference_path(p.model.name)
    key = perplexity_key(p.profile.quality.max_tokens, p.profile.quality.context)
    if path.is_file():
        doc = json.loads(path.read_text())
        if key in doc["perplexity"]:
            return doc, True
    get_run_logger().warning("no committed reference for %s at %s: computing one with transformers", p.model.name, key)
    return build_reference(p, [(p.profile.quality.max_tokens, p.profile.quality.context)]), False


def _engine(p: TollgateConf) -> Any:
    return LLM(
        p.model.path,
        quant=p.quant.name,
        quant_options=dict(p.quant.options),
        calibration_text=p.data.calibration_text,
    )


def agreement(ours: list[list[int]], refs: list[list[int]]) -> float:
    """Share of reference tokens matched position by position (a divergence costs every later position)."""
    total = sum(len(r) for r in refs)
    same = sum(a == b for o, r in zip(ours, refs, strict=True) for a, b in zip(o, r, strict=False))
    return 100.0 * same / total if total else 0.0


@task
def offline_checks(p: TollgateConf, ref: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Perplexity and greedy agreement of the offline engine; returns metrics and its greedy texts."""
    llm = _engine(p)
    q = p.profile.quality
    scores = score(llm.engine.model, eval_ids(p, q.max_tokens), q.context)
    ref_ppl = ref["perplexity"][perplexity_key(q.max_tokens, q.context)]["perplexity"]
    greedy = ref["greedy"]
    params = SamplingParams(
        temperature=0.0,
        max_tokens=greedy["new_tokens"],
        logit_bias={t: -100.0 for t in greedy["suppressed_token_ids"]},
    )
    prompts = [item["prompt_ids"] for item in greedy["prompts"]]
    with torch.inference_mode():
        outputs = llm.generate(prompts, params)
    ours = [list(o.outputs[0].token_ids) for o in outputs]
    refs = [item["reference_ids"] for item in greedy["prompts"]]
    metrics = {
        "perplexity": scores.perplexity,
        "reference_perplexity": ref_ppl,
        "perplexity_drift_pct": abs(scores.perplexity - ref_ppl) / ref_ppl * 100.0,
        "tokens": scores.predicted,
        "greedy": {"token_agreement_pct": agreement(ours, refs), "prompts": len(refs)},
        "lm_eval": offline_lm_eval(p, llm),
    }
    return metrics, [o.outputs[0].text for o in outputs]


@flow(name="quality", flow_run_name=stage_run_name)
def quality_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Validate the eval text, then compare perplexity, greedy output and the served API with the references."""
    started = now_utc()
    p = load_params(Path(params_path))
    lines = validate_text(Path(p.data.eval_text))
    ref, committed = reference(p)
    offline, texts = offline_checks(p, ref)
    served = served_checks(p, ref, texts)
    lm_eval = lm_eval_agreement(offline.pop("lm_eval"), served.pop("lm_eval"))
    metrics = {
        "quality": {
            **offline,
            "lm_eval": lm_eval,
            "served": served,
            "text_lines": lines,
            "reference": {"committed": int(committed)},
        }
    }
    write_metrics("quality", metrics, params_path, started)
    return metrics
