"""lm-evaluation-harness through the OpenAI API, and the same number computed offline, on a text from disk.

    python -m engine.lm_eval_task --text data/wikitext-2/test.txt --folder reports/lm_eval_task
    lm-eval --model local-completions --include_path reports/lm_eval_task --tasks wikitext_local --limit 4 \\
        --model_args base_url=http://127.0.0.1:8000/v1/completions,model=smollm2-135m-instruct,\\
tokenizer_backend=huggingface,tokenizer=models/smollm2-135m-instruct,max_length=513

The task is lm-eval's own `wikitext` recipe (documents, rolling loglikelihood, word perplexity) over the project's
wikitext-2 file instead of the Hub dataset: `write_task` splits the file into its articles (JSONL) and writes a
task YAML that `--include_path` loads, so nothing is downloaded. `local-completions` scores each window with
`echo` + `logprobs` (the prompt tokens' log-probabilities) on the server. `offline_word_perplexity` cuts the same
windows with lm-eval's own functions and scores them with the engine in-process: the two must agree, or the
served log-probabilities are wrong.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

import torch
import yaml

TASK = "wikitext_local"
HEADING = re.compile(r"^ = [^=].* = $")  # an article's title line in wikitext's raw files


def documents(text_path: Path) -> list[str]:
    """The file's articles, each from its title line to the next (lm-eval's document-level wikitext)."""
    docs: list[list[str]] = []
    for line in text_path.read_text(encoding="utf-8").splitlines(keepends=True):
        if HEADING.match(line.rstrip("\n")) or not docs:
            docs.append([])
        docs[-1].append(line)
    return [text for doc in docs if (text := "".join(doc)).strip()]


def write_task(text_path: Path, folder: Path) -> Path:
    """The articles as JSONL and a task YAML beside them (absolute paths, so any working directory works)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = (folder / "documents.jsonl").resolve()
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(text_path)))
    task = {
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "output_type": "loglikelihood_rolling",
        "test_split": "test",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [
            {"metric": "word_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
            {"metric": "byte_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
            {"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False},
        ],
        "metadata": {"version": 1.0, "source": str(text_path)},
    }
    (folder / f"{TASK}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return folder


def model_args(url: str, model: str, tokenizer_dir: Path, max_length: int) -> str:
    """`--model_args` for lm-eval's local-completions model against our server."""
    parts = {
        "base_url": f"{url}/v1/completions",
        "model": model,
        "tokenizer_backend": "huggingface",
        "tokenizer": str(tokenizer_dir),
        "max_length": max_length,
        "num_concurrent": 1,
        "max_retries": 1,
    }
    return ",".join(f"{k}={v}" for k, v in parts.items())


def served_word_perplexity(
    url: str, model: str, tokenizer_dir: Path, folder: Path, limit: int, max_length: int
) -> dict[str, float]:
    """lm-eval's word perplexity of the first `limit` documents, scored by the server."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(
        model="local-completions",
        model_args=model_args(url, model, tokenizer_dir, max_length),
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(folder)),
        limit=limit,
    )
    metrics = out["results"][TASK]
    return {"word_perplexity": metrics["word_perplexity,none"], "bits_per_byte": metrics["bits_per_byte,none"]}


@torch.inference_mode()
def offline_word_perplexity(model: Any, tokenizer: Any, docs: list[str], max_length: int) -> dict[str, float]:
    """The same number in-process: lm-eval's rolling windows (its own functions), scored by the engine."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    nll, words = 0.0, 0
    for doc in docs:
        ids = tokenizer(doc, add_special_tokens=False).input_ids
        # lm-eval's API models keep a token for generation (max_length - 1), their windows one more for context
        for context, continuation in map(
            make_disjoint_window, get_rolling_token_windows(ids, prefix, max_length - 2, 1)
        ):
            logits = model.score(context + continuation)[len(context) - 1 : -1].float()
            nll += torch.nn.functional.cross_entropy(logits, torch.tensor(continuation), reduction="sum").item()
        words += len(re.split(r"\s+", doc))  # lm-eval's count_words
    return {"word_perplexity": math.exp(nll / words), "documents": len(docs), "words": words}


def main(argv: list[str] | None = None) -> int:
    """Write the task folder for `lm-eval --include_path`."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", type=Path, required=True, help="a wikitext raw file, e.g. data/wikitext-2/test.txt")
    p.add_argument("--folder", type=Path, required=True, help="where the task YAML and its documents go")
    args = p.parse_args(argv)
    if not args.text.is_file():
        p.error(f"--text {args.text}: no such file")
    print(f"task {TASK}: {write_task(args.text, args.folder) / (TASK + '.yaml')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
