"""model.quantization=4bit quantizes transformers 5's fused experts to packed NF4, exactly as bitsandbytes'
Linear4bit quantizes each expert's own nn.Linear (gate and up as two matrices), on tiny families whose layers are
all >= 64 wide (loading's small-layer rule keeps narrower Linears in full precision)."""

import importlib.util
import os

import numpy as np
import pytest
import torch
from conftest import tiny_model_cfg

from moee_exp.errors import ConfigError
from moee_exp.features.extract import extract
from moee_exp.features.loading import load_model
from moee_exp.features.quant_experts import NF4Experts, check_quantizable, expert_bytes, fused_experts
from moee_exp.features.tiny import ensure_tiny_model

# bitsandbytes is in the lock; imported where a test needs it (~1.7 s: not for every worker's collection)
pytestmark = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")

# every Linear and every expert matrix >= 64 outputs: attention k/v with 4 heads of 16, MLA ranks widened
WIDE = {
    "tiny": {"intermediate_size": 64},
    "tiny_qwen2_moe": {"num_key_value_heads": 4},
    "tiny_qwen3_moe": {"moe_intermediate_size": 64, "num_key_value_heads": 4},
    "tiny_mixtral": {"intermediate_size": 64, "num_key_value_heads": 4},
    "tiny_deepseek_v3": {"moe_intermediate_size": 64, "q_lora_rank": 64, "kv_lora_rank": 56},
}
TEXTS = ["A quantized expert still computes.", "hi", "The committee postponed the vote until Friday.", "x y z"]


def wide_path(name: str) -> str:
    spec = dict(tiny_model_cfg(name)["tiny"])
    spec["config"] = {**spec["config"], **WIDE[name]}
    return str(ensure_tiny_model(spec, os.environ["MOEE_CACHE_DIR"]))


_loaded = {}


def loaded(name: str, quantization: str):
    if (name, quantization) not in _loaded:
        _loaded[name, quantization] = load_model(wide_path(name), quantization=quantization)
    return _loaded[name, quantization]


def linear4bit(weight: torch.Tensor) -> torch.nn.Module:
    """The public code's expert matrix: an nn.Linear of this weight, quantized by bitsandbytes' Linear4bit as
    transformers' BitsAndBytesConfig(nf4, double quant, compute dtype = the model's) builds it."""
    import bitsandbytes as bnb

    out_f, in_f = weight.shape
    lin = bnb.nn.Linear4bit(in_f, out_f, bias=False, compute_dtype=weight.dtype, compress_statistics=True,
                            quant_type="nf4")
    lin.weight = bnb.nn.Params4bit(weight.detach().clone(), requires_grad=False, compress_statistics=True,
                                   quant_type="nf4", blocksize=64)
    return lin.to(weight.device)


def reference_experts(full_module: torch.nn.Module):
    """Each expert as three Linear4bit (gate, up, down) built from the full-precision fused weights."""
    half = full_module.gate_up_proj.shape[1] // 2
    return [(linear4bit(full_module.gate_up_proj[e, :half]), linear4bit(full_module.gate_up_proj[e, half:]),
             linear4bit(full_module.down_proj[e])) for e in range(full_module.num_experts)]


def reference_forward(module, experts):
    """transformers 4.x's per-expert MoE block body: down(act(gate(x)) * up(x)), weighted, summed per token."""
    def forward(hidden_states, top_k_index, top_k_weights):
        out = torch.zeros_like(hidden_states)
        for e, (gate, up, down) in enumerate(experts):
            token, pos = torch.where(top_k_index == e)
            if len(token):
                x = hidden_states[token]
                y = down(module.act_fn(gate(x)) * up(x)) * top_k_weights[token, pos, None]
                out.index_add_(0, token, y.to(out.dtype))
        return out
    return forward


@pytest.mark.parametrize("name", sorted(WIDE))
def test_each_expert_is_what_linear4bit_makes_of_its_own_linear(name):
    full, quant = loaded(name, "none"), loaded(name, "4bit")
    pairs = list(zip(fused_experts(full.model), [m for _, m in quant.model.named_modules() if hasattr(m, "moee_nf4")],
                     strict=True))
    assert pairs, "no fused experts module was quantized"
    gen = torch.Generator().manual_seed(0)
    for (_, fm), qm in pairs:
        q: NF4Experts = qm.moee_nf4
        for e, (gate, up, down) in enumerate(reference_experts(fm)):
            for kind, ref in (("gate", gate), ("up", up), ("down", down)):
                # the same packed bytes and quant state as Linear4bit's Params4bit
                assert torch.equal(getattr(q, f"{kind}_packed")[e], ref.weight.data.view(-1))
                assert torch.equal(getattr(q, f"{kind}_absmax")[e], ref.weight.quant_state.absmax)
                assert torch.equal(getattr(q, f"{kind}_absmax2")[e], ref.weight.quant_state.state2.absmax)
                x = torch.randn(5, ref.in_features, generator=gen)
                torch.testing.assert_close(q.linear(kind, e, x), ref(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny", "tiny_qwen2_moe", "tiny_deepseek_v3"])
def test_whole_4bit_model_equals_per_expert_linear4bit_reference(name):
    """HS and RW of our 4-bit model equal the same model whose experts are per-expert Linear4bit (all other Linears
    are transformers' own bitsandbytes modules in both)."""
    texts = TEXTS
    ours = extract(loaded(name, "4bit"), texts, progress=False)
    ref_lm = load_model(wide_path(name), quantization="4bit")
    for (_, fm), (_, qm) in zip(fused_experts(loaded(name, "none").model),
                                [(n, m) for n, m in ref_lm.model.named_modules() if hasattr(m, "moee_nf4")],
                                strict=True):
        del qm.moee_nf4
        qm.forward = reference_forward(qm, reference_experts(fm))
    ref = extract(ref_lm, texts, progress=False)
    full = extract(loaded(name, "none"), texts, progress=False)
    for key in ("hs", "rw"):
        np.testing.assert_allclose(ours[key], ref[key], rtol=1e-4, atol=1e-5)
        assert not np.allclose(ours[key], full[key], rtol=1e-4, atol=1e-5), "4-bit changed nothing"


@pytest.mark.parametrize("name", ["tiny", "tiny_mixtral"])
def test_expert_bytes_drop_to_a_third_of_bf16(name):
    full, quant = loaded(name, "none"), loaded(name, "4bit")
    bf16 = sum(p.numel() * 2 for _, m in fused_experts(full.model) for p in m.parameters(recurse=False)
               if p.dim() >= 3)
    assert bf16 > 0 and expert_bytes(quant.model) <= 0.35 * bf16
    assert not fused_experts(quant.model)  # no full-precision fused tensor is left
    assert quant.settings["experts_implementation"] == "moee_nf4"


class _Config:
    model_type = "toy"
    num_experts = 4


class _OwnExperts(torch.nn.Module):
    """Fused experts outside transformers' experts interface (as JetMoE's and Llama 4's are)."""

    def __init__(self):
        super().__init__()
        self.config = _Config()
        self.weight = torch.nn.Parameter(torch.zeros(4, 64, 64))


def test_a_family_it_cannot_quantize_is_refused_in_one_line():
    model = torch.nn.Module()
    model.config = _Config()
    model.experts = _OwnExperts()
    with pytest.raises(ConfigError) as err:
        check_quantizable(model, "4bit", "toy")
    assert "\n" not in str(err.value) and "model.quantization=none" in str(err.value)
    with pytest.raises(ConfigError, match="8bit would leave toy's fused experts"):
        check_quantizable(model, "8bit", "toy")


def test_experts_whose_forward_is_not_the_interfaces_are_refused_at_load(monkeypatch):
    """A family on the interface whose experts compute something else is refused, not quantized wrongly."""
    from transformers.models.olmoe import modeling_olmoe

    own = modeling_olmoe.OlmoeExperts.forward
    monkeypatch.setattr(modeling_olmoe.OlmoeExperts, "forward", lambda self, *a: 2 * own(self, *a))
    with pytest.raises(ConfigError, match="computes something the experts interface"):
        load_model(wide_path("tiny"), quantization="4bit")


def test_8bit_refuses_fused_experts_before_loading():
    with pytest.raises(ConfigError, match="8bit would leave olmoe's fused experts"):
        load_model(wide_path("tiny"), quantization="8bit")


def test_identity_records_nf4_experts_only_under_4bit():
    """Features computed with bf16 experts under 4-bit (before) are not reused for NF4 experts, and the unquantized
    identity is unchanged."""
    from moee_exp.features.identity import model_identity

    cfg = tiny_model_cfg("tiny")
    assert "experts_nf4" not in model_identity(cfg)
    assert model_identity({**cfg, "quantization": "4bit"})["experts_nf4"] is True
