"""Training data in OpenAI's fine-tuning JSONL: validated line by line, tokenized with the loss on assistant turns.

Two shapes are accepted, as OpenAI's API does: chat (`{"messages": [{"role": ..., "content": ...}, ...]}`, at
least one assistant turn) and legacy prompt/completion (`{"prompt": ..., "completion": ...}`). A bad line fails the
whole file before any training starts, naming its line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
IGNORE = -100  # the label of a token that is not trained on (torch's cross_entropy ignore_index)


class DataError(ValueError):
    """A training file that cannot be used; `line` is 1-based (0: the file as a whole)."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        self.path, self.line = str(path), line
        where = f"line {line}" if line else "file"
        super().__init__(f"{Path(path).name}, {where}: {message}")


@dataclass(frozen=True)
class Example:
    """One conversation; `prompt`/`completion` files become a user turn and an assistant turn."""

    messages: tuple[dict[str, str], ...]


def _message(raw: Any, index: int) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ValueError(f"messages[{index}] must be an object")
    role, content = raw.get("role"), raw.get("content")
    if role not in ROLES:
        raise ValueError(f"messages[{index}].role must be one of {', '.join(ROLES)}, got {role!r}")
    if not isinstance(content, str) or not content:
        raise ValueError(f"messages[{index}].content must be a non-empty string")
    return {"role": role, "content": content}


def parse_line(text: str) -> Example:
    """One JSONL line as an Example; ValueError saying what is wrong."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise ValueError("each line must be a JSON object")
    if "messages" in row:
        if not isinstance(row["messages"], list) or not row["messages"]:
            raise ValueError("messages must be a non-empty list")
        messages = tuple(_message(m, i) for i, m in enumerate(row["messages"]))
        if not any(m["role"] == "assistant" for m in messages):
            raise ValueError("messages has no assistant turn to train on")
        return Example(messages)
    if "prompt" in row and "completion" in row:
        if not all(isinstance(row[k], str) and row[k] for k in ("prompt", "completion")):
            raise ValueError("prompt and completion must be non-empty strings")
        turns = ({"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]})
        return Example(turns)
    raise ValueError('each line needs "messages" (chat format) or "prompt" and "completion"')


def read_jsonl(path: str | Path, min_examples: int = 1) -> list[Example]:
    """Every example of a file; DataError at the first bad line (blank lines are skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, 0, f"cannot be read: {exc}") from None
    examples = []
    for number, text in enumerate(lines, 1):
        if text.strip():
            try:
                examples.append(parse_line(text))
            except ValueError as exc:
                raise DataError(path, number, str(exc)) from None
    if len(examples) < min_examples:
        raise DataError(path, 0, f"has {len(examples)} examples, at least {min_examples} are needed")
    return examples


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def tokenize(example: Example, tokenizer: Any, max_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels; labels are IGNORE except on assistant replies (and their end-of-turn token).

    Each reply's tokens are what rendering the conversation up to it adds to the prompt rendered before it, so
    any chat template works without `{% generation %}` markers; a template that rewrites earlier turns is
    rejected rather than trained on misaligned labels."""
    messages = list(example.messages)
    ids: list[int] = []
    labels: list[int] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], True)
        full = _render(tokenizer, messages[: i + 1], False)
        if full[: len(prompt)] != prompt or prompt[: len(ids)] != ids:
            raise ValueError("the chat template does not render turns as a growing prefix")
        labels += [IGNORE] * (len(prompt) - len(ids)) + full[len(prompt) :]
        ids = full
    return ids[:max_len], labels[:max_len]
