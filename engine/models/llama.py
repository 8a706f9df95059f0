"""One generic decoder for the Llama family (Llama, Mistral, Qwen2), configured by `ModelConfig`."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from engine.attention import AttentionMetadata, apply_rotary, paged_attention
from engine.config import ModelConfig
from engine.models.rope import RotaryEmbedding


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (torch's fused op)."""
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension."""
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class DecoderLayer(nn.Module):
    """Pre-norm attention + SwiGLU MLP; q/k/v and gate/up are fused so a step is one matmul each."""

    def __init__(self, cfg: ModelConfig, index: int) -> None:
        super().__init__()
        self.index = index
        self.num_heads, self.kv_heads, self.head_dim = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        )
        qkv_out = (self.num_heads + 2 * self.kv_heads) * self.head_dim
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.qkv_proj = nn.Linear(cfg.hidden_size, qkv_out, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, cfg.hidden_size, bias=False)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """x + attention(norm(x)), then + MLP(norm(x)); K/V go into the paged pool."""
        t = x.shape[0]
        qkv = self.qkv_proj(self.input_layernorm(x))
        qk_heads = self.num_heads + self.kv_heads
        qk = apply_rotary(qkv[:, : qk_heads * self.head_dim].view(t, qk_heads, self.head_dim), cos, sin)
        q, k = qk[:, : self.num_heads], qk[:, self.num_heads :]
        v = qkv[:, qk_heads * self.head_dim :].view(t, self.kv_heads, self.head_dim)
        x = x + self.o_proj(paged_attention(q, k, v, meta, self.index))
        gate, up = self.gate_up_proj(self.post_attention_layernorm(x)).chunk(2, dim=-1)
        return x + self.down_proj(F.silu(gate) * up)


class LlamaForCausalLM(nn.Module):
    """Token ids + positions + attention metadata in, final hidden states out; logits on request."""

    def __init__(self, cfg: ModelConfig, max_positions: int | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.max_positions = max_positions or cfg.max_position_embeddings
        self.rebuild_derived()

    def rebuild_derived(self) -> None:
        """Tie the head and fill the rope tables: needed again after `to_empty` on a meta-built model."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        device = self.embed_tokens.weight.device
        self.rotary = RotaryEmbedding(self.config, self.max_positions).to(device)

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Final hidden states for the step's tokens (logits are computed separately, for few rows)."""
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary.tables(positions, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, meta)
        return x

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits for the rows that sample."""
        return self.lm_head(self.norm(hidden))

    @torch.inference_mode()
    def score(self, token_ids: list[int]) -> torch.Tensor:
        """Logits for every position of one sequence, without a KV cache (evaluation, parity checks)."""
        ids = torch.tensor(token_ids, dtype=torch.long, device=self.embed_tokens.weight.device)
        positions = torch.arange(len(token_ids), device=ids.device)
        return self.compute_logits(self(ids, positions, AttentionMetadata.no_cache([len(token_ids)])))

    @torch.inference_mode()
    def embed(self, token_ids: list[int]) -> torch.Tensor:
        """Sentence embedding: the mean over tokens of the final-norm hidden states (no KV cache)."""
        ids = torch.tensor(token_ids, dtype=torch.long, device=self.embed_tokens.weight.device)
        positions = torch.arange(len(token_ids), device=ids.device)
        return self.norm(self(ids, positions, AttentionMetadata.no_cache([len(token_ids)]))).mean(0)

    def load_hf_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load HF-named weights, fusing q/k/v and gate/up; complains about anything missing or unused.

        Each tensor is looked up once and copied in, so a lazy mapping keeps one tensor alive at a time."""
        taken: set[str] = set()

        def take(key: str) -> torch.Tensor:
            taken.add(key)
            return state[key]
        try:
            with torch.no_grad():
                self.embed_tokens.weight.copy_(take("model.embed_tokens.weight"))
                self.norm.weight.copy_(take("model.norm.weight"))
                if "lm_head.weight" in state:
                    head = take("lm_head.weight")
                    if not self.config.tie_word_embeddings:
                        self.lm_head.weight.copy_(head)
                elif not self.config.tie_word_embeddings:
                    raise KeyError("lm_head.weight")
                for i, layer in enumerate(self.layers):
                    p = f"model.layers.{i}."
                    attn = p + "self_attn."
                    layer.qkv_proj.weight.copy_(
                        torch.cat([take(f"{attn}{n}_proj.weight") for n in "qkv"])
                    )
                    if layer.qkv_proj.bias is not None:
                        layer.qkv_proj.bias.copy_(torch.cat([take(f"{attn}{n}_proj.bias") for n in "qkv"]))
                    layer.o_proj.weight.copy_(take(attn + "o_proj.weight"))
                    layer.gate_up_proj.weight.copy_(
                        torch.cat([take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")])
                    )
                    layer.down_proj.weight.copy_(take(p + "mlp.down_proj.weight"))
                    layer.input_layernorm.weight.copy_(take(p + "input_layernorm.weight"))
                    layer.post_attention_layernorm.weight.copy_(take(p + "post_attention_layernorm.weight"))
        except KeyError as exc:
            raise KeyError(f"weight {exc.args[0]!r} is missing") from None
        except RuntimeError as exc:
            raise ValueError(f"weight shape does not match config.json: {exc}") from None
        unused = [k for k in state if k not in taken and not k.endswith("rotary_emb.inv_freq")]
        if unused:
            raise ValueError(f"unexpected weights (not part of {self.config.architecture}): {unused[:5]}")
