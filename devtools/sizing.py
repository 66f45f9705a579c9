"""What a checkpoint needs, from its config alone: RW dims and weight memory in bf16 and 4-bit, on the meta device.

The model is built with accelerate's ``init_empty_weights`` (no memory, no download), as ``load_model`` builds it
(the base model, no LM head). Routers are found by the same code as at run time, so RW dims are what a run gives.
4-bit is bitsandbytes nf4 as ``moee_exp.features.loading`` asks for it: ``nn.Linear`` weights and transformers 5's
fused expert tensors (per expert and matrix, ``moee_exp.features.quant_experts``) take 0.5 byte per weight plus double
quantization's statistics (one uint8 absmax per 64 weights, one fp32 per 256 absmaxes); routers and matrices with
< 64 outputs are skipped, and everything else stays bf16. Fused experts off transformers' experts interface (which a
4-bit load refuses) are counted in bf16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moee_exp.features.quant_experts import SMALL, _linear_layout, fused_experts, on_interface
from moee_exp.features.routers import find_routers

GIB = 1024**3
GPU_GB = 80  # one A100/H100 80 GB
HEADROOM_GB = 8  # activations at batch 32 x 512 tokens, CUDA context, allocator slack


# bytes per NF4 weight with double quant (blocksize 64): 4 bits, a uint8 absmax per block, an fp32 per 256 blocks
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)


def _nf4_expert_weights(module) -> int:
    """Weights of a fused experts module that a 4-bit load stores in NF4 (matrices with >= 64 outputs)."""
    if not on_interface(module):
        return 0
    return module.num_experts * sum(w.numel() for w, _ in _linear_layout(module, 0).values() if w.shape[0] >= SMALL)


@dataclass
class Size:
    model_type: str
    n_routers: int
    n_experts: int
    hidden: int
    params: int
    bf16_gb: float
    nf4_gb: float

    @property
    def rw_dims(self) -> int:
        return self.n_routers * self.n_experts

    def fits(self, gb: float) -> bool:
        return gb + HEADROOM_GB <= GPU_GB


def config_from_facts(facts: dict):
    from transformers import AutoConfig

    facts = dict(facts)
    return AutoConfig.for_model(facts.pop("model_type"), **facts)


def size_of(config) -> Size:
    from accelerate import init_empty_weights
    from transformers import AutoModel

    with init_empty_weights():
        model = AutoModel.from_config(config)
    routers = find_routers(model)
    skip = {id(r.module) for r in routers}
    params = sum(p.numel() for p in model.parameters())
    quantized = sum(m.weight.numel() for m in model.modules()
                    if isinstance(m, torch.nn.Linear) and id(m) not in skip and m.out_features >= 64)
    quantized += sum(_nf4_expert_weights(m) for _, m in fused_experts(model))
    bf16 = params * 2
    nf4 = (params - quantized) * 2 + quantized * NF4_BYTES
    w = routers[0].module.weight
    return Size(config.model_type, len(routers), w.shape[0], w.shape[1], params, bf16 / GIB, nf4 / GIB)
