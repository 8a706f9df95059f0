"""Layer-sequential quantization, as the GPTQ reference does it: each decoder block calibrates on the outputs of
the blocks before it *as quantized*, and inside a block each projection on the outputs of the projections before
it as quantized ("true sequential": q/k/v, then o, then gate/up, then down). Errors are then corrected where they
arise instead of compounding unseen, which is what one fp32 pass for every Hessian cannot do.

While a block runs, a quantized projection stands in as its dequantized fp32 weight; every original weight is
put back at the end, so the caller still quantizes (and checks) against the fp32 model. A statistics pass stops
as soon as the step's projections have seen their inputs (the "Catcher" of the reference implementation and
AutoGPTQ), which halves the cost of the passes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

import torch
from torch import nn

from engine.attention import AttentionMetadata
from engine.progress import progress
from engine.quant.base import QuantizationError
from engine.quant.calibration import LayerStats, check_batches, recording
from engine.quant.linear import QuantLinear

# Each step's projections, in the order a block runs them; a block has the gated MLP's `gate_up_proj` or the plain
# one's `up_proj`, and a routed-expert block neither (its stacked experts are not Linear layers: they stay fp32).
STEPS = (("qkv_proj",), ("o_proj",), ("gate_up_proj", "up_proj"), ("down_proj",))
LayerQuantizer = Callable[[str, nn.Linear, LayerStats], QuantLinear]


class _Stop(Exception):
    """Raised by a hook once the projections of a step have recorded their inputs: the rest of the block is moot."""


class _Block:
    """One decoder block and the calibration windows' hidden states entering it."""

    def __init__(self, model: nn.Module, batches: list[list[int]]) -> None:
        device = next(model.parameters()).device
        ids = [torch.tensor(b, device=device) for b in batches]
        self.hidden = [model.embed(t, torch.arange(len(t), device=device)) for t in ids]
        dtype = self.hidden[0].dtype
        self.rope = [model.rope_tables(torch.arange(len(t), device=device), dtype) for t in ids]
        self.meta = [AttentionMetadata.no_cache([len(t)]) for t in ids]

    def run(self, block: nn.Module) -> list[torch.Tensor]:
        """The block's outputs for every window."""
        return [block(h, rope, m) for h, rope, m in zip(self.hidden, self.rope, self.meta, strict=True)]

    def feed(self, block: nn.Module, last: nn.Module) -> None:
        """Run every window through the block only as far as `last` (its hooks see their inputs)."""

        def stop(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            raise _Stop  # a forward hook registered after the recording ones: they have run

        handle = last.register_forward_hook(stop)
        try:
            for h, rope, m in zip(self.hidden, self.rope, self.meta, strict=True):
                with suppress(_Stop):
                    block(h, rope, m)
        finally:
            handle.remove()


@torch.no_grad()
def quantize_sequentially(
    model: nn.Module, batches: list[list[int]], quantize: LayerQuantizer
) -> tuple[dict[str, QuantLinear], dict[str, str]]:
    """Quantized decoder projections by name, and the ones that failed (name -> why; they stay fp32 downstream)."""
    inputs = _Block(model, check_batches(model, batches))
    done: dict[str, QuantLinear] = {}
    failed: dict[str, str] = {}
    originals: dict[str, torch.Tensor] = {}
    try:
        for i, block in enumerate(progress(model.layers, desc="gptq", unit="block", leave=False)):
            for step in STEPS:
                present = [n for n in step if isinstance(getattr(block, n, None), nn.Module)]
                if not present:
                    continue
                layers = {f"layers.{i}.{n}": block.get_submodule(n) for n in present}
                with recording(layers) as stats:
                    inputs.feed(block, block.get_submodule(present[-1]))
                for name, linear in layers.items():
                    try:
                        stats[name].check(name)
                        done[name] = quantize(name, linear, stats[name])
                    except (QuantizationError, RuntimeError, ValueError) as exc:
                        failed[name] = str(exc)
                        continue
                    originals[name] = linear.weight.detach().clone()
                    linear.weight.copy_(done[name].dequantize())
            inputs.hidden = inputs.run(block)
    finally:
        for name, weight in originals.items():
            model.get_submodule(name).weight.copy_(weight)
    return done, failed
