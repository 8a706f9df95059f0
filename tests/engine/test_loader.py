"""Checkpoint loading: every layout loads, and every broken file gives an error naming it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.loader import CheckpointError, load_model, load_tokenizer
from engine.loader.gguf_file import read_gguf
from engine.loader.hf import read_state_dict
from tests.conftest import make_tiny_checkpoint

IDS = [1, 5, 900, 42, 7, 3000]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), "llama")


@pytest.fixture
def copy(tiny: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny, dst)
    return dst


def reference_logits(tiny: Path) -> torch.Tensor:
    return load_model(tiny).score(IDS)


def test_sharded_safetensors_with_index(tiny: Path, copy: Path) -> None:
    state = load_file(copy / "model.safetensors")
    (copy / "model.safetensors").unlink()
    names = sorted(state)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        shard = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, str(copy / shard))
        weight_map.update(dict.fromkeys(part, shard))
    (copy / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert torch.equal(load_model(copy).score(IDS), reference_logits(tiny))


def test_pytorch_bin(tiny: Path, copy: Path) -> None:
    state = load_file(copy / "model.safetensors")
    (copy / "model.safetensors").unlink()
    torch.save(state, copy / "pytorch_model.bin")
    assert torch.equal(load_model(copy).score(IDS), reference_logits(tiny))


def test_gguf_round_trip_undoes_llama_cpp_permutation(tiny: Path, tmp_path: Path) -> None:
    """Write a GGUF the way llama.cpp's converter does (q/k rows permuted) and read back the HF weights."""
    state = load_file(tiny / "model.safetensors")
    cfg = json.loads((tiny / "config.json").read_text())
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def permute(w: torch.Tensor, n: int) -> np.ndarray:
        return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape).numpy()

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(cfg["vocab_size"])
    names = {
        "q_proj": "attn_q",
        "k_proj": "attn_k",
        "v_proj": "attn_v",
        "o_proj": "attn_output",
        "gate_proj": "ffn_gate",
        "up_proj": "ffn_up",
        "down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for name, w in state.items():
        if name.startswith("model.layers."):
            _, _, i, *rest = name.split(".")
            key = rest[-2]
            data = permute(w, heads) if key == "q_proj" else permute(w, kv_heads) if key == "k_proj" else w.numpy()
            writer.add_tensor(f"blk.{i}.{names[key]}.weight", data)
        else:
            gname = {
                "model.embed_tokens.weight": "token_embd.weight",
                "model.norm.weight": "output_norm.weight",
                "lm_head.weight": "output.weight",
            }[name]
            writer.add_tensor(gname, w.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    config, read = read_gguf(path)
    assert config["architectures"] == ["LlamaForCausalLM"] and not config["tie_word_embeddings"]
    for name, w in state.items():
        assert torch.equal(read[name], w), name
    assert (load_model(path).score(IDS) - reference_logits(tiny)).abs().max() < 1e-5


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model(tmp_path / "nope")


def test_missing_weights(copy: Path) -> None:
    (copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights found") as err:
        load_model(copy)
    assert str(copy) in str(err.value)


def test_missing_config(copy: Path) -> None:
    (copy / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: file not found"):
        load_model(copy)


def test_corrupt_config_json(copy: Path) -> None:
    (copy / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(copy)


def test_truncated_safetensors(copy: Path) -> None:
    path = copy / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated safetensors") as err:
        load_model(copy)
    assert err.value.path == str(path)


def test_truncated_pytorch_bin(copy: Path) -> None:
    torch.save(load_file(copy / "model.safetensors"), copy / "pytorch_model.bin")
    (copy / "model.safetensors").unlink()
    data = (copy / "pytorch_model.bin").read_bytes()
    (copy / "pytorch_model.bin").write_bytes(data[:1000])
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: corrupt or truncated"):
        load_model(copy)


def test_missing_shard(copy: Path) -> None:
    (copy / "model.safetensors").rename(copy / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002\.safetensors: file not found"):
        load_model(copy)


def test_missing_weight_tensor(copy: Path) -> None:
    state = load_file(copy / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, str(copy / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*missing"):
        load_model(copy)


def test_unknown_architecture(copy: Path) -> None:
    cfg = json.loads((copy / "config.json").read_text())
    cfg["architectures"] = ["MambaForCausalLM"]
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"unknown architecture \['MambaForCausalLM'\]; supported: Llama"):
        load_model(copy)


def test_config_that_disagrees_with_the_weights(copy: Path) -> None:
    cfg = json.loads((copy / "config.json").read_text())
    cfg["intermediate_size"] *= 2
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"weight shape does not match config\.json for layers\.0\.") as err:
        load_model(copy)
    assert err.value.path == str(copy)


def test_unknown_gguf_architecture(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match=r"unknown GGUF architecture 'mamba'; supported: llama") as err:
        load_model(path)
    assert err.value.path == str(path)


def test_wrong_gguf_magic(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGML" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="not a GGUF file") as err:
        load_model(path)
    assert err.value.path == str(path)


def test_truncated_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + b"\x03\0\0\0" + b"\xff" * 8)
    with pytest.raises(CheckpointError, match="corrupt or truncated GGUF"):
        load_model(path)


def test_missing_tokenizer(copy: Path) -> None:
    (copy / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        load_tokenizer(copy)


def test_safetensors_are_read_one_tensor_per_lookup(tiny: Path) -> None:
    eager = load_file(tiny / "model.safetensors")
    lazy = read_state_dict(tiny)
    assert sorted(lazy) == sorted(eager) and len(lazy) == len(eager)
    name = next(iter(eager))
    torch.testing.assert_close(lazy[name], eager[name])
    assert lazy[name] is not lazy[name]  # nothing is cached: the loader holds one tensor at a time
    with pytest.raises(KeyError):
        lazy["model.no_such.weight"]
