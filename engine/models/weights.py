"""Map a checkpoint's tensor names onto the generic decoder's, fusing q/k/v and gate/up and undoing layouts.

Each architecture names its tensors its own way (`transformer.h.0.attn.c_attn`, `gpt_neox.layers.0.attention.
query_key_value`, `model.layers.0.self_attn.q_proj`); `ArchSpec.layer_names` / `top_names` say which decoder
module each fills. Each tensor is looked up once and copied in, so a lazy mapping keeps one alive at a time.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping

import torch
from torch import nn

from engine.architectures import ArchSpec
from engine.config import ModelConfig

IGNORED = re.compile(r"(rotary_emb\.inv_freq|attn\.bias|attn\.masked_bias)$")
PART_ORDER = {"q": 0, "k": 1, "v": 2, "gate": 0, "up": 1}
# One expert per tensor, as checkpoints store them (Mixtral's w1/w3/w2, Qwen-MoE's and OLMoE's gate/up/down),
# stacked into the decoder's [experts, ...] parameters.
EXPERT = re.compile(r"(?:mlp|block_sparse_moe)\.experts\.(\d+)\.(w1|w2|w3|gate_proj|up_proj|down_proj)\.weight$")
EXPERT_PARTS = {"w1": "gate", "gate_proj": "gate", "w3": "up", "up_proj": "up", "w2": "down", "down_proj": "down"}


def target(spec: ArchSpec, key: str) -> tuple[str, str] | None:
    """(decoder parameter name, part of a fused matrix or "") for a checkpoint tensor name; None if not ours."""
    rest = key[len(spec.prefix) :] if key.startswith(spec.prefix) else key
    layer = re.match(rf"{re.escape(spec.layers)}\.(\d+)\.(.+)$", rest)
    names, prefix = (spec.layer_names, f"layers.{layer[1]}.") if layer else (spec.top_names, "")
    path = layer[2] if layer else rest
    expert = EXPERT.match(path) if layer else None
    if expert:
        part = EXPERT_PARTS[expert[2]]
        param = "experts_down" if part == "down" else "experts_gate_up"
        return f"{prefix}experts.{param}", f"{expert[1]}.{part}"
    if path in names:  # a bare parameter (routed experts' stacked weights)
        module, kind = names[path], ""
    else:
        module_path, _, kind = path.rpartition(".")
        if module_path not in names:
            return None
        module, kind = names[module_path], "." + kind
    module, _, part = module.partition(":")
    return f"{prefix}{module}{kind}", part


def _per_head_qkv(w: torch.Tensor, heads: int) -> torch.Tensor:
    """GPT-NeoX interleaves q, k, v per head ([H, 3, D, ...]); the decoder wants [q; k; v]."""
    return w.reshape(heads, 3, -1, *w.shape[1:]).transpose(0, 1).reshape(w.shape)


def _deinterleave_qk(w: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Reorder each q/k head's rotary dims from adjacent pairs to halves, so the half-split rotary computes the
    interleaved one (q.k is unchanged by the same permutation of both)."""
    d, rd = cfg.head_dim, cfg.rotary_dim
    order = torch.cat((torch.arange(0, rd, 2), torch.arange(1, rd, 2), torch.arange(rd, d)))
    heads = cfg.num_attention_heads + cfg.num_key_value_heads
    qk = w[: heads * d].reshape(heads, d, *w.shape[1:])[:, order].reshape(heads * d, *w.shape[1:])
    return torch.cat((qk, w[heads * d :]))


def _transform(model: nn.Module, name: str, w: torch.Tensor) -> torch.Tensor:
    """Undo a checkpoint's storage conventions for one decoder parameter."""
    spec, cfg = model.config.spec, model.config
    if spec.conv1d and name.startswith("layers.") and name.endswith(".weight") and w.dim() == 2:
        w = w.t()
    if spec.qkv_layout == "per-head" and ".qkv_proj." in name:
        w = _per_head_qkv(w, cfg.num_attention_heads)
    if spec.rope_interleaved and ".qkv_proj." in name:
        w = _deinterleave_qk(w, cfg)
    if spec.norm_offset and "norm." in name and name.endswith(".weight"):
        w = w + spec.norm_offset
    return w


def _assemble(name: str, parts: dict[str, str], state: Mapping[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    """One decoder parameter from its checkpoint tensors: as is, fused (q/k/v, gate/up) or stacked (experts)."""
    if "" in parts:
        return state[parts[""]]
    if "." in next(iter(parts)):  # per-expert tensors
        experts = shape[0]
        wanted = [f"{e}.{p}" for e in range(experts) for p in (("down",) if "down" in name else ("gate", "up"))]
        missing = [w for w in wanted if w not in parts]
        if missing:
            raise KeyError(f"weight for {name!r} is missing expert parts {missing[:4]}")
        per = len(wanted) // experts
        return torch.stack([torch.cat([state[parts[w]] for w in wanted[e * per : (e + 1) * per]]) for e in range(experts)])
    return torch.cat([state[parts[p]] for p in sorted(parts, key=PART_ORDER.__getitem__)])


def _check_fused(spec: ArchSpec, name: str, parts: dict[str, str]) -> None:
    """A fused parameter whose checkpoint has some parts only: name the missing tensor as the checkpoint would."""
    wanted = ("q", "k", "v") if "qkv_proj" in name else ("gate", "up")
    if "" in parts or "." in next(iter(parts)) or set(parts) == set(wanted):
        return
    missing = next(p for p in wanted if p not in parts)
    layer, module, kind = re.match(r"layers\.(\d+)\.(\w+)(\..+)$", name).groups()
    path = next(k for k, v in spec.layer_names.items() if v == f"{module}:{missing}")
    raise KeyError(f"weight {spec.prefix}{spec.layers}.{layer}.{path}{kind!s} is missing")


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy every checkpoint tensor into the decoder; complains about anything missing, misshapen or unused."""
    spec, cfg = model.config.spec, model.config
    plan: dict[str, dict[str, str]] = defaultdict(dict)
    unused = []
    for key in state:
        found = target(spec, key)
        if found is None:
            if not IGNORED.search(key):
                unused.append(key)
            continue
        plan[found[0]][found[1]] = key
    if cfg.tie_word_embeddings:
        plan.pop("lm_head.weight", None)
    params = dict(model.named_parameters())
    for name, parts in plan.items():
        _check_fused(spec, name, parts)
    unused += [k for name, parts in plan.items() if name not in params for k in parts.values()]
    if unused:
        raise ValueError(f"unexpected weights (not part of {cfg.architecture}): {unused[:5]}")
    with torch.no_grad():
        for name, param in params.items():
            if name not in plan:
                raise KeyError(f"weight for {name!r} is missing from the checkpoint")
            try:
                param.copy_(_transform(model, name, _assemble(name, plan[name], state, param.shape)))
            except RuntimeError as exc:
                raise ValueError(f"weight shape does not match config.json for {name}: {exc}") from None
