"""DeepSeekMoE (model_type "deepseek") on today's transformers: our class loads a checkpoint in the official layout
unchanged (fp32 and 4-bit), its routers are found by shape, and its MoE layer equals the paper's equations."""

import json

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT
from safetensors.torch import load_file

from moee_exp.features.featurize import model_path
from moee_exp.features.loading import load_model
from moee_exp.features.models import DeepseekConfig
from moee_exp.features.routers import find_routers
from moee_exp.integrations.api import embed_texts

# one xdist worker runs this module: its module-scoped fixture is built once, not once per worker
pytestmark = pytest.mark.xdist_group("test_deepseek_moe")

# config.json of deepseek-ai/deepseek-moe-16b-base as published (facts from public copies; the hub is not reachable).
OFFICIAL_CONFIG = {
    "architectures": ["DeepseekForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_deepseek.DeepseekConfig",
        "AutoModel": "modeling_deepseek.DeepseekModel",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekForCausalLM",
    },
    "aux_loss_alpha": 0.001,
    "bos_token_id": 100000,
    "eos_token_id": 100001,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 10944,
    "max_position_embeddings": 4096,
    "model_type": "deepseek",
    "moe_intermediate_size": 1408,
    "moe_layer_freq": 1,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "norm_topk_prob": False,
    "num_attention_heads": 16,
    "num_experts_per_tok": 6,
    "num_hidden_layers": 28,
    "num_key_value_heads": 16,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 10000,
    "scoring_func": "softmax",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.36.0",
    "use_cache": True,
    "vocab_size": 102400,
}
# The same keys with tiny sizes (in-features multiples of 64: bitsandbytes 4-bit on CPU needs them) and fp32
# weights; vocab and special ids come from the tiny tokenizer.
TINY = dict(hidden_size=64, intermediate_size=128, moe_intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=3, max_position_embeddings=512,
            initializer_range=0.1, torch_dtype="float32")
NOT_CONFIG_ARGS = ("architectures", "auto_map", "torch_dtype", "transformers_version")  # file metadata


def official_names(cfg: dict) -> dict[str, tuple]:
    """Weight names and shapes of the official modeling code (DeepseekModel / DeepseekMoE / MoEGate / DeepseekMLP)."""
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    names = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}

    def mlp(prefix, width):
        names.update({f"{prefix}.gate_proj.weight": (width, h), f"{prefix}.up_proj.weight": (width, h),
                      f"{prefix}.down_proj.weight": (h, width)})

    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        names.update({f"{p}.input_layernorm.weight": (h,), f"{p}.post_attention_layernorm.weight": (h,)})
        names.update({f"{p}.self_attn.{x}_proj.weight": (h, h) for x in "qkvo"})
        if i >= cfg["first_k_dense_replace"] and i % cfg["moe_layer_freq"] == 0:
            names[f"{p}.mlp.gate.weight"] = (cfg["n_routed_experts"], h)
            for e in range(cfg["n_routed_experts"]):
                mlp(f"{p}.mlp.experts.{e}", cfg["moe_intermediate_size"])
            mlp(f"{p}.mlp.shared_experts", cfg["moe_intermediate_size"] * cfg["n_shared_experts"])
        else:
            mlp(f"{p}.mlp", cfg["intermediate_size"])
    return names


def write_official_checkpoint(path, seed: int = 0) -> dict:
    """A tiny random DeepSeekMoE saved exactly as the hub checkpoint: official config.json keys, official weight names."""
    from moee_exp.features.models.deepseek_moe import DeepseekForCausalLM
    from moee_exp.features.tiny import SPECIAL_TOKENS, _train_tokenizer

    tokenizer = _train_tokenizer(512)
    ids = {k: tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[k.replace("_id", "")]) for k in ("bos_token_id", "eos_token_id")}
    cfg = {**OFFICIAL_CONFIG, **TINY, **ids, "vocab_size": len(tokenizer)}
    torch.manual_seed(seed)
    kwargs = {k: v for k, v in cfg.items() if k not in NOT_CONFIG_ARGS}
    DeepseekForCausalLM(DeepseekConfig(**kwargs)).save_pretrained(path)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))  # the official file, not our class's rendering
    tokenizer.save_pretrained(path)
    return cfg


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    path = tmp_path_factory.mktemp("deepseek-moe-tiny")
    return path, write_official_checkpoint(path)


def deepseek_model_cfg(path, **over) -> dict:
    """conf/model/deepseek_moe.yaml with a local path, as the runner would see `model=deepseek_moe`."""
    cfg = {k: v for k, v in yaml.safe_load((ROOT / "conf/model/deepseek_moe.yaml").read_text()).items() if k != "defaults"}
    return {**cfg, "name_or_path": str(path), **over}


def test_saved_weights_have_the_official_names_and_shapes(official):
    path, cfg = official
    tensors = load_file(path / "model.safetensors")
    assert {k: tuple(t.shape) for k, t in tensors.items()} == official_names(cfg)
    assert json.loads((path / "config.json").read_text()) == cfg and set(cfg) == set(OFFICIAL_CONFIG)


def test_official_checkpoint_loads_into_our_class_with_nothing_missing(official):
    from transformers import AutoConfig, AutoModelForCausalLM

    path, cfg = official
    mcfg = deepseek_model_cfg(path)
    assert mcfg["trust_remote_code"] is False
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)  # the auto_map to remote code is not used
    assert type(config) is DeepseekConfig and config.n_routed_experts == 8 and config.rope_parameters["rope_theta"] == 10000
    model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
    assert type(model).__module__ == "moee_exp.features.models.deepseek_moe"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    # and through the framework (base model, as `model=deepseek_moe model.name_or_path=<dir>`): every weight is the file's
    lm = load_model(model_path(mcfg), trust_remote_code=mcfg["trust_remote_code"])
    tensors = {k.removeprefix("model."): t for k, t in load_file(path / "model.safetensors").items() if k != "lm_head.weight"}
    params = dict(lm.model.named_parameters())
    assert set(params) == set(tensors)
    for name, tensor in tensors.items():
        torch.testing.assert_close(params[name].detach(), tensor, rtol=0, atol=0, msg=name)


def test_routers_are_the_moe_gates_only(official):
    path, cfg = official
    lm = load_model(str(path))
    assert [r.name for r in lm.routers] == ["layers.1.mlp.gate", "layers.2.mlp.gate"]  # layer 0 dense; no shared
    assert (lm.n_experts, lm.hidden_size) == (8, 64)


def test_real_16b_config_has_27_gates_of_64_experts():
    from transformers import AutoModel

    kwargs = {k: v for k, v in OFFICIAL_CONFIG.items() if k not in NOT_CONFIG_ARGS}
    with torch.device("meta"):
        model = AutoModel.from_config(DeepseekConfig(**kwargs))
    routers = find_routers(model)
    assert [r.name for r in routers] == [f"layers.{i}.mlp.gate" for i in range(1, 28)]
    assert sum(r.module.weight.shape[0] for r in routers) == 1728
    assert sum(p.numel() for p in model.parameters()) + 102400 * 2048 == pytest.approx(16.4e9, rel=0.01)  # "16.4B"


def test_4bit_loads_and_keeps_routers_exact(official):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    path, _ = official
    mcfg = deepseek_model_cfg(path, quantization="4bit")
    full, quant = load_model(str(path)), load_model(model_path(mcfg), quantization=mcfg["quantization"])
    assert isinstance(quant.model.layers[1].mlp.experts[0].gate_proj, bnb.nn.Linear4bit)
    assert isinstance(quant.model.layers[1].mlp.shared_experts.up_proj, bnb.nn.Linear4bit)
    tensors = load_file(path / "model.safetensors")
    for r in quant.routers:
        assert r.module.weight.dtype == torch.float32
        torch.testing.assert_close(r.module.weight.detach(), tensors[f"model.{r.name}.weight"], rtol=0, atol=0)
    texts = ["A quantized DeepSeekMoE still routes.", "Second text."]
    a, b = embed_texts(full, texts), embed_texts(quant, texts)
    cos = (a["rw"].ravel() @ b["rw"].ravel()) / np.linalg.norm(a["rw"]) / np.linalg.norm(b["rw"])
    assert np.isfinite(b["rw"]).all() and cos > 0.9


def reference_moe(sd: dict, prefix: str, x: torch.Tensor, top_k: int, norm_topk_prob: bool) -> torch.Tensor:
    """The DeepSeekMoE layer written out token by token from its equations and the raw weights."""

    def swiglu(p, v):
        gate, up = sd[f"{p}.gate_proj.weight"] @ v, sd[f"{p}.up_proj.weight"] @ v
        return sd[f"{p}.down_proj.weight"] @ (torch.nn.functional.silu(gate) * up)

    out = []
    for v in x:
        s = torch.softmax(sd[f"{prefix}.gate.weight"] @ v, dim=0)
        chosen = sorted(range(len(s)), key=lambda e: -s[e].item())[:top_k]
        g = {e: s[e] for e in chosen}
        if norm_topk_prob:
            total = sum(g.values())
            g = {e: w / total for e, w in g.items()}
        y = swiglu(f"{prefix}.shared_experts", v)
        for e, w in g.items():
            y = y + w * swiglu(f"{prefix}.experts.{e}", v)
        out.append(y)
    return torch.stack(out)


@pytest.mark.parametrize("norm_topk_prob", [False, True])
def test_moe_layer_equals_the_equations(official, norm_topk_prob):
    from moee_exp.features.models.deepseek_moe import DeepseekForCausalLM

    path, cfg = official
    model = DeepseekForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    layer = model.model.layers[2].mlp
    layer.gate.norm_topk_prob = norm_topk_prob
    sd = {k: v.float() for k, v in load_file(path / "model.safetensors").items()}
    x = torch.randn(2, 5, cfg["hidden_size"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = layer(x)
    want = reference_moe(sd, "model.layers.2.mlp", x.reshape(-1, cfg["hidden_size"]), cfg["num_experts_per_tok"], norm_topk_prob)
    torch.testing.assert_close(got.reshape(-1, cfg["hidden_size"]), want, rtol=0, atol=1e-5)
    assert want.abs().mean() > 1e-2  # not trivially zero


def test_model_config_files_for_deepseek_need_no_remote_code():
    for name in ("deepseek_moe", "tiny_deepseek_moe"):
        cfg = yaml.safe_load((ROOT / "conf/model" / f"{name}.yaml").read_text())
        assert not cfg.get("trust_remote_code", False)



@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_trust_remote_code_true_still_uses_our_class(official, tmp_path, quantization):
    """With the hub's .py files next to the weights and trust_remote_code=true, transformers 5 prefers our
    registered class (the hub code, which cannot import on transformers 5, is never executed)."""
    import shutil

    if quantization == "4bit":
        pytest.importorskip("bitsandbytes")
    path, _ = official
    ckpt = tmp_path / "with-remote-code"
    shutil.copytree(path, ckpt)
    for name in ("modeling_deepseek.py", "configuration_deepseek.py"):  # stand-ins that fail loudly if imported
        (ckpt / name).write_text('raise ImportError("the hub remote code was executed")\n')
    lm = load_model(str(ckpt), trust_remote_code=True, quantization=quantization)
    assert type(lm.model).__module__ == "moee_exp.features.models.deepseek_moe"
    assert [r.name for r in lm.routers] == ["layers.1.mlp.gate", "layers.2.mlp.gate"]
