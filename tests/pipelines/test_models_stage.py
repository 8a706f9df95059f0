"""The models stage counts only what passed: an architecture with one failing tiny checkpoint is not supported,
a conversion that is not bit-exact lowers the exact share and the formats count."""

from __future__ import annotations

from engine.loader.parity import ParityResult
from engine.loader.support import SupportRow
from pipelines.models import loader_metrics, report_lines

FEATURES = dict.fromkeys(("gqa", "sliding_window", "rope_scaling", "bias", "tied_embeddings", "moe"), False)
CHECK = {"architecture": "LlamaForCausalLM", "steps": 16, "max_abs_diff": 1e-4, "greedy_equal": True}
REAL = [{"model": "smollm2-135m", "load_s": 1.0, "passed": True, **CHECK}]


def row(name: str, arch: str, family: str, passed: bool) -> SupportRow:
    parity = ParityResult(name, arch, 64, 1e-6 if passed else 0.5, passed, 8, 1, 1.0, passed)
    return SupportRow(name, arch, family, FEATURES, parity)


def trips(*exact: bool) -> list[dict]:
    return [{"conversion": f"c{i}", "bit_exact": e, "tensors": 10, "seconds": 1.0} for i, e in enumerate(exact)]


def test_an_architecture_counts_only_when_every_tiny_checkpoint_passes() -> None:
    rows = [row("llama", "LlamaForCausalLM", "llama", True), row("llama-yarn", "LlamaForCausalLM", "llama", False),
            row("gpt2", "GPT2LMHeadModel", "gpt2", True)]  # fmt: skip
    m = loader_metrics(rows, REAL, trips(True, True))
    assert m["supported_models"] == 1 and m["architecture_verified"] == ["GPT2LMHeadModel"]
    assert m["families"] == 1 and m["tiny_passed"] == 2


def test_a_conversion_that_is_not_exact_is_counted_against() -> None:
    rows = [row("llama", "LlamaForCausalLM", "llama", True)]
    assert loader_metrics(rows, REAL, trips(True, True))["formats_supported"] == 3
    m = loader_metrics(rows, REAL, trips(False, True))
    assert m["conversion_exact_pct"] == 50.0 and m["formats_supported"] == 2


def test_a_real_model_that_fails_parity_is_not_real_weight_verified() -> None:
    m = loader_metrics(
        [row("llama", "LlamaForCausalLM", "llama", True)],
        [{**REAL[0], "passed": False}, {"model": "gemma-3-270m", "load_s": 9.0, "passed": True, **CHECK}],
        trips(True),
    )
    assert m["real_weight_verified"] == ["gemma-3-270m"] and m["load_s"] == 9.0
    assert "real-weight-verified: gemma-3-270m" in report_lines([], m)[2]
