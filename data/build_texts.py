"""Rebuild the shipped texts that are not wikitext-2 (run once; the outputs are committed).

    python data/build_texts.py

- data/python-docs/test.txt: the Python 3.11 language reference topics that `pydoc` ships
  (`pydoc_data.topics`, PSF License): technical documentation, an evaluation domain no calibration text is from.
- data/calibration/code.txt: Python 3.11 standard-library modules (PSF License), a calibration domain.
- data/calibration/dialogue.txt: chats the default model (SmolLM2-135M-Instruct, Apache-2.0) writes greedily
  (repetition penalty 1.2, which stops its loops) to the prompts below, in its chat template: a calibration
  domain shaped like what the server sees.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent
DOCS_BYTES = 200_000
CODE_MODULES = ("heapq", "bisect", "textwrap", "shlex", "fnmatch", "graphlib", "statistics", "colorsys", "string",
                "sched", "queue", "calendar")  # fmt: skip
PROMPTS = (
    "What is the capital of France?", "Give me three tips for sleeping better.", "How do I boil an egg?",
    "Write a haiku about autumn.", "Explain photosynthesis to a child.", "What should I pack for a beach trip?",
    "How can I save money on groceries?", "Translate 'good morning' into Spanish.", "Why is the sky blue?",
    "Suggest a name for a grey cat.", "What is a prime number?", "How do I start running as a beginner?",
    "Summarize the story of Cinderella.", "What are the planets of the solar system?", "How does a rainbow form?",
    "Write a short thank-you note to a teacher.", "What is the difference between weather and climate?",
    "How many days are in a leap year?", "Give me a recipe for pancakes.", "What does a firefighter do?",
    "How do plants drink water?", "Tell me a fun fact about octopuses.", "How do I make a paper airplane?",
    "What is the tallest mountain on Earth?", "Write two sentences about the ocean.", "What is gravity?",
    "How can I be more productive in the morning?", "What games can children play indoors?",
    "Describe a busy market in the morning.", "How do bees make honey?", "What is the water cycle?",
    "Give me advice for a job interview.", "Why do leaves change colour in autumn?", "What is a volcano?",
    "How should I care for a houseplant?", "Write a limerick about a dog.", "What makes a good friend?",
    "How does a bicycle work?", "Plan a simple weekend picnic.", "What is the moon made of?",
)  # fmt: skip


def python_docs() -> str:
    """The pydoc topics in key order, cut at a paragraph break near DOCS_BYTES."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k].strip() for k in sorted(topics))
    return text[: text.rfind("\n\n", 0, DOCS_BYTES)] + "\n"


def stdlib_code() -> str:
    """The source of CODE_MODULES, one after another."""
    return "\n\n".join(inspect.getsource(__import__(name)) for name in CODE_MODULES)


def dialogue(model: str) -> str:
    """Greedy chats of the model with every prompt, rendered with its chat template."""
    sys.path.insert(0, str(DATA.parent))
    from engine.llm import LLM
    from engine.sampling import SamplingParams

    llm = LLM(model)
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    outs = llm.generate(
        [llm.chat_prompt(c) for c in chats], SamplingParams(temperature=0, max_tokens=160, repetition_penalty=1.2)
    )
    tok = llm.tokenizer
    rendered = [
        tok.apply_chat_template([*c, {"role": "assistant", "content": o.outputs[0].text.strip()}], tokenize=False)
        for c, o in zip(chats, outs, strict=True)
    ]
    return "\n".join(rendered)


def main() -> None:
    """Write the three texts."""
    (DATA / "python-docs").mkdir(exist_ok=True)
    (DATA / "calibration").mkdir(exist_ok=True)
    (DATA / "python-docs" / "test.txt").write_text(python_docs(), encoding="utf-8")
    (DATA / "calibration" / "code.txt").write_text(stdlib_code(), encoding="utf-8")
    model = sys.argv[1] if len(sys.argv) > 1 else str(DATA.parent / "models" / "smollm2-135m-instruct")
    (DATA / "calibration" / "dialogue.txt").write_text(dialogue(model), encoding="utf-8")


if __name__ == "__main__":
    main()
