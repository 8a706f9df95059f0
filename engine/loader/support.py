"""The support matrix: for every tiny checkpoint, what its config exercises and whether parity (and each
quantization strategy) holds. `python -m engine.loader list` prints it; the `models` stage records it."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import ModelConfig
from engine.loader.parity import ParityResult, check_parity
from engine.loader.tiny import TINY, build_tiny
from engine.progress import progress

QUANT_STRATEGIES = ("int8", "int4", "gptq", "awq")


def features(cfg: ModelConfig) -> dict[str, bool]:
    """What a checkpoint's config turns on, as the README's matrix columns name them."""
    return {
        "gqa": cfg.num_key_value_heads < cfg.num_attention_heads,
        "sliding_window": bool(cfg.sliding_window or any(cfg.layer_windows)),
        "rope_scaling": cfg.rope_scaling is not None
        or any(isinstance(v, dict) and v.get("rope_type", "default") != "default"
               for v in (cfg.raw.get("rope_parameters") or {}).values()),
        "bias": cfg.attention_bias or cfg.mlp_bias or cfg.o_bias,
        "tied_embeddings": cfg.tie_word_embeddings,
        "moe": cfg.num_experts > 0,
    }  # fmt: skip


@dataclass
class SupportRow:
    """One tiny checkpoint's line of the matrix."""

    name: str
    architecture: str
    family: str
    features: dict[str, bool]
    parity: ParityResult
    quant: dict[str, str] = field(default_factory=dict)  # strategy -> "ok" or the error

    def row(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"name": self.name, "architecture": self.architecture, "family": self.family,
                "features": self.features, "parity": self.parity.row(), "quant": self.quant}  # fmt: skip


def probe_quant(path: Path, strategy: str, calibration_text: str | Path) -> str:
    """ "ok" when the strategy quantizes this checkpoint and the engine generates from it; else the error."""
    from engine.engine import EngineConfig, LLMEngine
    from engine.sampling import SamplingParams

    try:
        config = EngineConfig(quant=strategy, calibration_text=str(calibration_text), calibration_tokens=256)
        engine = LLMEngine(path, config)
        engine.add_request([5, 6, 7, 8], SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True), "q")
        while engine.has_unfinished_requests():
            engine.step()
        return "ok" if len(engine.pop_output("q").outputs[0].token_ids) == 4 else "generated too few tokens"
    except Exception as exc:  # a strategy that cannot handle an architecture is reported, not raised
        return f"{type(exc).__name__}: {str(exc)[:200]}"


def support_matrix(names: list[str] | None = None, calibration_text: str | Path | None = None) -> list[SupportRow]:
    """Build each tiny checkpoint, check parity and (with calibration text) each quantization strategy."""
    rows = []
    for name in progress(names or list(TINY), desc="architectures", unit="model"):
        with tempfile.TemporaryDirectory() as tmp:
            path = build_tiny(name, tmp)
            cfg = ModelConfig.from_file(path / "config.json")
            row = SupportRow(name, cfg.architecture, cfg.spec.family, features(cfg), check_parity(path))
            if calibration_text is not None:
                row.quant = {s: probe_quant(path, s, calibration_text) for s in QUANT_STRATEGIES}
            rows.append(row)
    return rows
