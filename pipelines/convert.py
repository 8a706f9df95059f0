"""Stage `convert`: produce the engine checkpoint of the configured model (`python -m pipelines convert`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from prefect import flow, get_run_logger, task
from transformers import LlamaConfig, LlamaForCausalLM

from engine.loader.convert import convert_gguf, gguf_in_package
from engine.loader.gguf_file import read_gguf_tokenizer
from pipelines.common import stage_run_name
from pipelines.config import ModelConf, load_params


def make_random_checkpoint(model: ModelConf, out: Path) -> Path:
    """A tiny randomly initialised Llama with the package GGUF's tokenizer (for fast end-to-end runs)."""
    src = model.source
    tokenizer = read_gguf_tokenizer(gguf_in_package(src.package))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=src.hidden_size,
        intermediate_size=src.intermediate_size,
        num_hidden_layers=src.num_hidden_layers,
        num_attention_heads=src.num_attention_heads,
        num_key_value_heads=src.num_key_value_heads,
        max_position_embeddings=src.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    LlamaForCausalLM(cfg).save_pretrained(tmp)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


@task(retries=1, retry_delay_seconds=2)
def convert_model(model: ModelConf) -> str:
    """Write the engine checkpoint for the configured model source."""
    out = Path(model.path)
    if model.source.kind == "gguf_package":
        convert_gguf(gguf_in_package(model.source.package), out)
    elif model.source.kind == "random":
        make_random_checkpoint(model, out)
    else:
        raise ValueError(f"model.source.kind {model.source.kind!r}: expected gguf_package or random")
    get_run_logger().info("checkpoint ready at %s", out)
    return str(out)


@flow(name="convert", flow_run_name=stage_run_name)
def convert_flow(params_path: str = "params.yaml") -> str:
    """Convert (or create) the configured model into an engine checkpoint."""
    return convert_model(load_params(Path(params_path)).model)
