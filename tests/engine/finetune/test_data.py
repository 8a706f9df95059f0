"""OpenAI fine-tuning JSONL: what is accepted, how a bad line is reported, and which tokens carry the loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.finetune.data import IGNORE, DataError, Example, read_jsonl, tokenize
from engine.loader import load_tokenizer

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_chat_and_prompt_completion_lines_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, [json.dumps(CHAT), "", json.dumps({"prompt": "2+2=", "completion": "4"})])
    rows = read_jsonl(path)
    assert [m["role"] for m in rows[1].messages] == ["user", "assistant"]
    assert rows[0].messages[1]["content"] == "hello there"


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"messages": [{"role": "user", "content": "only a question"}]}), "no assistant turn"),
        (json.dumps({"messages": [{"role": "robot", "content": "x"}]}), "role must be one of"),
        (json.dumps({"messages": [{"role": "assistant", "content": ""}]}), "non-empty string"),
        (json.dumps({"text": "free text"}), '"messages"'),
        (json.dumps([1, 2]), "JSON object"),
    ],
)
def test_a_bad_line_fails_the_file_with_its_line_number(tmp_path: Path, bad: str, words: str) -> None:
    path = write(tmp_path, [json.dumps(CHAT), json.dumps(CHAT), bad, json.dumps(CHAT)])
    with pytest.raises(DataError) as caught:
        read_jsonl(path)
    assert caught.value.line == 3
    assert "line 3" in str(caught.value) and words in str(caught.value)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="0 examples"):
        read_jsonl(write(tmp_path, [""]))


def test_only_assistant_replies_and_their_end_of_turn_carry_the_loss(smollm2: Path) -> None:
    tokenizer = load_tokenizer(smollm2)
    example = Example(
        (
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
            {"role": "assistant", "content": "second answer"},
        )
    )
    ids, labels = tokenize(example, tokenizer, max_len=512)
    assert len(ids) == len(labels)
    trained = tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE])
    assert "first answer" in trained and "second answer" in trained
    assert "question" not in trained and "system" not in trained
    assert trained.count("<|im_end|>") == 2  # the model learns to stop
    assert all(lab in (IGNORE, t) for t, lab in zip(ids, labels, strict=True))
