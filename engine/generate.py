"""Answer one chat message from the command line: `python -m engine.generate --model PATH "question"`."""

from __future__ import annotations

import argparse
import sys

from engine import LLM, SamplingParams
from engine.loader import CheckpointError


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: stream one chat answer to stdout."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("message", help="the user message")
    parser.add_argument("--model", required=True, help="engine checkpoint directory or GGUF file")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    args = parser.parse_args(argv)
    try:
        llm = LLM(args.model)
        params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for delta in llm.stream(llm.chat_prompt([{"role": "user", "content": args.message}]), params):
        print(delta.text, end="", flush=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
