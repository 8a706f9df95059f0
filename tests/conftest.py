"""Shared fixtures: tiny random checkpoints of each architecture, and the real SmolLM2-135M checkpoint."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipelines.environment import SWITCHES

os.environ.update(SWITCHES)  # before any library below reads its switches at import

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import torch
import uvicorn

from engine.engine import EngineConfig
from engine.router.replicas import free_port
from engine.server.app import ServerConfig, build_app

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = ROOT / "models" / "smollm2-135m-instruct"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")

# one thread per xdist worker: two workers on two cores, each spinning two threads, slow each other down
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The converted default model; `make setup` creates it."""
    if not (SMOLLM2 / "model.safetensors").is_file():
        pytest.fail(f"{SMOLLM2} is missing: run `make setup` first")
    return SMOLLM2


def make_tiny_checkpoint(directory: Path, arch: str, **overrides: object) -> Path:
    """Save a randomly initialised HF model of `arch` with SmolLM2's tokenizer (so text round-trips)."""
    import transformers

    config_cls, model_cls = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    }[arch]
    settings = {
        "vocab_size": 49152,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        **overrides,
    }
    torch.manual_seed(0)
    model = model_cls(config_cls(**settings)).eval()
    with torch.no_grad():  # HF starts biases at 0 and norms at 1: randomise them so parity tests see them
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(directory)
    for name in TOKENIZER_FILES:
        if (SMOLLM2 / name).is_file():
            shutil.copy(SMOLLM2 / name, directory / name)
    return directory


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-llama"), "llama")


# -- a live OpenAI-compatible server on 127.0.0.1 (uvicorn in a thread, so tests can look at its engine) --


@dataclass
class LiveServer:
    url: str
    app: object
    uvicorn_server: uvicorn.Server
    thread: threading.Thread

    def engine(self, name: str):
        return self.app.state.server.engines[name].engine

    def stop(self) -> None:
        self.uvicorn_server.should_exit = True
        self.thread.join(timeout=30)


def start_server(config: ServerConfig, timeout: float = 180) -> LiveServer:
    app = build_app(config)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return LiveServer(url, app, server, thread)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.should_exit = True
    raise RuntimeError(f"server at {url} not healthy within {timeout}s")


@pytest.fixture(scope="session")
def live(smollm2: Path) -> Iterator[LiveServer]:
    server = start_server(ServerConfig(models=[str(smollm2)], engine=EngineConfig(kv_cache_bytes=256 * 2**20)))
    yield server
    server.stop()


def make_adapter(base: Path, directory: Path, seed: int, rank: int = 4, targets: tuple[str, ...] | None = None) -> Path:
    """A random LoRA adapter for `base`, written by HF transformers + peft (B is not zero, so it changes logits)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    modules = list(targets or ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=modules, init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # peft's random init is small against a tiny model's weights: make the effect visible
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(20)
    peft_model.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_adapters(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four adapters on the tiny Llama: all projections, attention only, MLP only, and rank 8 on q/v."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "all": make_adapter(tiny_llama, root / "all", 1),
        "attn": make_adapter(tiny_llama, root / "attn", 2, targets=("q_proj", "k_proj", "v_proj", "o_proj")),
        "mlp": make_adapter(tiny_llama, root / "mlp", 3, targets=("gate_proj", "up_proj", "down_proj")),
        "qv8": make_adapter(tiny_llama, root / "qv8", 4, rank=8, targets=("q_proj", "v_proj")),
    }
