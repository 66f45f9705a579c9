"""Find the MoE routers of a model by their shape, for any family.

A router (gate) is a linear map from the hidden state to one logit per expert: a module whose 2-D ``weight`` is
(n_experts, hidden_size), outside the experts themselves (a per-expert scale of that shape inside the module holding
the 3-D expert weights, e.g. Ergo's expert-indexed norm, is not a router). That holds for every MoE family
transformers ships (OLMoE, Qwen2/3-MoE, Mixtral, DeepSeek-V2/V3, ...) and for DeepSeekMoE's gate
(moee_exp.features.models); it needs no list of model names and no patched modeling files.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import NotAMoEModelError

# Config attributes under which the families name their expert count (attribute names, not model names).
EXPERT_COUNT_ATTRS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


@dataclass(frozen=True)
class Router:
    name: str
    module: torch.nn.Module


def text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def expert_count(config) -> int | None:
    """The (text) config's expert count, also from a nested config of its own (DBRX: ``ffn_config``)."""
    cfg = text_config(config)
    for attr in EXPERT_COUNT_ATTRS:
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 1:
            return value
    nested = [v for v in vars(cfg).values() if hasattr(v, "to_dict") and v is not cfg]
    return next((n for v in nested if (n := expert_count(v)) is not None), None)


def find_routers(model: torch.nn.Module) -> list[Router]:
    """The model's routers in layer (registration) order; raises NotAMoEModelError for a dense model."""
    cfg = text_config(model.config)
    n_experts, hidden = expert_count(cfg), cfg.hidden_size
    name = getattr(model, "name_or_path", "") or type(model).__name__
    if n_experts is None:
        raise NotAMoEModelError(
            f"{name} is not a Mixture-of-Experts model (its config has none of {EXPERT_COUNT_ATTRS}); "
            "MoEE needs a MoE LLM such as allenai/OLMoE-1B-7B-0924 (model=olmoe)."
        )
    # modules holding fused expert weights (a 3-D parameter, one slice per expert): nothing inside them routes
    experts = tuple(f"{n}." for n, m in model.named_modules()
                    if any(p.ndim == 3 and p.shape[0] == n_experts for p in m.parameters(recurse=False)))
    routers = [
        Router(n, m)
        for n, m in model.named_modules()
        if not isinstance(m, torch.nn.Embedding)
        and isinstance(getattr(m, "weight", None), torch.Tensor)
        and tuple(m.weight.shape) == (n_experts, hidden)
        and not n.startswith(experts)
    ]
    if not routers:
        raise NotAMoEModelError(
            f"{name}: config says {n_experts} experts but no module has a ({n_experts}, {hidden}) router weight: "
            "its router is not one linear map to a logit per expert (an MLP or product keys?), or the model is "
            "quantized and its routers must be left unquantized (see moee_exp.features.loading)."
        )
    return routers


def router_logits(router: Router, hidden: torch.Tensor) -> torch.Tensor:
    """Pre-softmax router logits for hidden states (n, hidden), computed in float32."""
    weight = router.module.weight
    bias = getattr(router.module, "bias", None)
    bias = bias.float() if isinstance(bias, torch.Tensor) and bias.shape == weight.shape[:1] else None
    return torch.nn.functional.linear(hidden.float(), weight.float(), bias)
