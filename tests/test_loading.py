"""Loading: dense models are refused before any weights are read; 4-bit keeps routers in full precision."""

import numpy as np
import pytest
import torch
from conftest import tiny_model_cfg

from moee_exp.errors import ModelNotFoundError, NotAMoEModelError
from moee_exp.features.featurize import model_path
from moee_exp.features.loading import load_model
from moee_exp.integrations.api import embed_texts


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("llama", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=4)
    path = tmp_path_factory.mktemp("dense")
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    return path


def test_dense_model_is_refused_with_a_clear_message(dense_dir):
    with pytest.raises(NotAMoEModelError, match="dense model with no MoE routers"):
        load_model(str(dense_dir))


def test_missing_model_dir():
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model("./no/such/model")


def test_unknown_hub_id_offline_names_the_fix():
    with pytest.raises(ModelNotFoundError, match="hf download"):
        load_model("nobody/no-such-moe-model")


def test_4bit_on_cpu_keeps_routers_unquantized():
    pytest.importorskip("bitsandbytes")
    path = model_path(tiny_model_cfg("tiny_qwen2_moe"))
    full, quant = load_model(path), load_model(path, quantization="4bit")
    assert [r.name for r in quant.routers] == [r.name for r in full.routers]
    assert all(r.module.weight.dtype == torch.float32 for r in quant.routers)
    texts = ["A quantized model still routes.", "Second text."]
    a, b = embed_texts(full, texts), embed_texts(quant, texts)
    assert np.isfinite(b["rw"]).all()
    # nf4 perturbs the hidden states, so RW moves, but it stays close to the full-precision routing
    cos = (a["rw"].ravel() @ b["rw"].ravel()) / np.linalg.norm(a["rw"]) / np.linalg.norm(b["rw"])
    assert cos > 0.9
