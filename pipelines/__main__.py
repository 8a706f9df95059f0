"""Run one pipeline stage or tool: `python -m pipelines STAGE [--params params.yaml]` (`STAGE --help` for more).

The one entry point of the package, so the process is set up (pipelines.environment) before any library loads.
"""

import importlib
import sys

from pipelines.environment import configure

# A stage's module has `<stage>_flow` (stage_cli runs it); a tool's has `main(argv)`. dvc.yaml orders the stages.
COMMANDS = {
    "config": "compose conf/ with Hydra overrides into params.yaml",
    "references": "write the model's HF reference outputs (data/references/)",
    "convert": "stage: the engine checkpoint of the configured model",
    "bench": "stage: throughput, latency and memory",
    "quality": "stage: perplexity and agreement with HF, offline and served",
    "calibrate": "stage: every quantization strategy against fp32",
    "finetune": "stage: LoRA and QLoRA on the project's task, served per request",
    "long_context": "stage: sink-window attention and compressed KV caches on long inputs",
    "serve": "stage: a real server under load",
    "faults": "stage: the Part 4.2 errors injected into real processes",
    "stress": "stage: a soak under a steady request mix",
    "models": "stage: every architecture's parity with transformers, every format's round trip",
    "cluster": "stage: the profile's cluster scenarios, replicas on namespaced nodes behind the router",
    "security": "stage: known vulnerabilities in the pins, bandit-style findings in the code",
    "codecheck": "stage: the code-quality numbers",
    "tests": "stage: the test suite as evidence",
    "gate": "stage: the release decision and report",
    "serve_peer": "tool: engine.server vs llama.cpp's llama-server under the same load",
    "release_gate": "every stage of dvc.yaml as one Prefect flow",
    "finetune_train": "tool: the Prefect flow that trains one LoRA/QLoRA adapter",
    "finetune_job": "tool: one fine-tuning job of the server API (the server starts it)",
}


def usage() -> str:
    """The command list, for `python -m pipelines` and `--help`."""
    lines = [f"  {name:<13} {what}" for name, what in COMMANDS.items()]
    return "usage: python -m pipelines COMMAND [ARGS]   (COMMAND --help for its own)\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Set the process up, then hand the arguments to the command's module."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] not in COMMANDS:
        print(f"error: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    configure()
    # Only now: every pipelines module imports libraries that read the switches at import.
    from pipelines.common import stage_cli

    module = importlib.import_module(f"pipelines.{args[0]}")
    if hasattr(module, "main"):
        return module.main(args[1:])
    return stage_cli(args[0], getattr(module, f"{args[0]}_flow"), module.__doc__ or "", args[1:])


if __name__ == "__main__":
    sys.exit(main())
