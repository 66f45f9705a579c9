"""What a checkpoint needs, from its config alone: RW dims and weight memory in bf16 and 4-bit, on the meta device.

The model is built with accelerate's ``init_empty_weights`` (no memory, no download), as ``load_model`` builds it
(the base model, no LM head). Routers are found by the same code as at run time, so RW dims are what a run gives.
4-bit is bitsandbytes nf4 as ``moee_exp.features.loading`` asks for it: only ``nn.Linear`` weights are quantized (0.5 byte
+ one fp32 absmax per 64 weights), routers and linears with < 64 outputs are skipped, and everything else stays
bf16 — including transformers 5's fused expert tensors (``gate_up_proj`` / ``down_proj`` parameters, not
``nn.Linear``), which is why a MoE's 4-bit footprint is far above a quarter of its bf16 one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .routers import find_routers

GIB = 1024**3
GPU_GB = 80  # one A100/H100 80 GB
HEADROOM_GB = 8  # activations at batch 32 x 512 tokens, CUDA context, allocator slack


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
    bf16 = params * 2
    nf4 = (params - quantized) * 2 + quantized * (0.5 + 4 / 64)
    w = routers[0].module.weight
    return Size(config.model_type, len(routers), w.shape[0], w.shape[1], params, bf16 / GIB, nf4 / GIB)
