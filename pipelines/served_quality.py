"""The quality stage's checks over the OpenAI API: greedy text, and lm-evaluation-harness's perplexity.

`served_checks` starts the pipeline's server and sends it the reference prompts (the offline engine's greedy text
must come back) and lm-eval's `local-completions` scoring of the eval text's first articles
(engine.lm_eval_task); `offline_lm_eval` is the same perplexity computed by the engine in-process, and
`lm_eval_agreement` puts the two side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from prefect import task

from engine.lm_eval_task import documents, offline_word_perplexity, served_word_perplexity, write_task
from pipelines.common import REPORTS, TRANSIENT_RETRIES
from pipelines.config import TollgateConf
from pipelines.live_server import running_server


@task(**TRANSIENT_RETRIES)
def served_checks(p: TollgateConf, ref: dict[str, Any], offline_texts: list[str]) -> dict[str, Any]:
    """The same greedy prompts over the OpenAI API must give the offline engine's text."""
    greedy = ref["greedy"]
    bias = {str(t): -100 for t in greedy["suppressed_token_ids"]}
    served = []
    with running_server(p) as url, httpx.Client(base_url=url, timeout=300) as client:
        model = Path(p.model.path).name
        for item in greedy["prompts"]:
            body = {"model": model, "prompt": item["text"], "max_tokens": greedy["new_tokens"], "temperature": 0}
            reply = client.post("/v1/completions", json={**body, "logit_bias": bias})
            reply.raise_for_status()
            served.append(reply.json()["choices"][0]["text"])
        q = p.profile.quality.lm_eval
        task_dir = write_task(Path(p.data.eval_text), REPORTS / "lm_eval_task")
        lm_eval = served_word_perplexity(url, model, Path(p.model.path), task_dir, q.documents, q.max_length)
    same = sum(a == b for a, b in zip(served, offline_texts, strict=True))
    return {"match_pct": 100.0 * same / len(served), "prompts": len(served), "lm_eval": lm_eval}


def lm_eval_agreement(offline: dict[str, Any], served: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's served word perplexity beside the engine's own on the same windows, and how far apart."""
    ours, theirs = offline["word_perplexity"], served["word_perplexity"]
    return {
        "word_perplexity": theirs,
        "bits_per_byte": served["bits_per_byte"],
        "offline_word_perplexity": ours,
        "disagreement_pct": abs(theirs - ours) / ours * 100.0,
        "documents": offline["documents"],
        "words": offline["words"],
    }


def offline_lm_eval(p: TollgateConf, llm: Any) -> dict[str, Any]:
    """The engine's own word perplexity over the windows lm-eval scores through the server."""
    q = p.profile.quality.lm_eval
    docs = documents(Path(p.data.eval_text))[: q.documents]
    return offline_word_perplexity(llm.engine.model, llm.tokenizer, docs, q.max_length)
