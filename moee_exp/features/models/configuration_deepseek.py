"""DeepSeekMoE's config (deepseek-ai/deepseek-moe-16b-base, model_type "deepseek"): the official config.json's keys.

Apart from the model (deepseek_moe.py), as transformers keeps configuration_*.py apart from modeling_*.py: reading
a config imports transformers' config classes only, not its modeling stack.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig


@strict
class DeepseekConfig(LlamaConfig):
    """The official config.json keys (defaults as in the original configuration_deepseek.py); Llama's base
    config turns its legacy ``rope_theta``/``rope_scaling`` into ``rope_parameters``."""

    model_type = "deepseek"

    vocab_size: int = 102400
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 30
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 32
    bos_token_id: int | None = 100000
    eos_token_id: int | list[int] | None = 100001
    moe_intermediate_size: int = 1407
    n_shared_experts: int | None = None
    n_routed_experts: int | None = None
    num_experts_per_tok: int | None = None
    moe_layer_freq: int = 1
    first_k_dense_replace: int = 0
    norm_topk_prob: bool = False
    scoring_func: str = "softmax"
    aux_loss_alpha: float = 0.001
    seq_aux: bool = True
    output_router_logits: bool = False

    def validate_architecture(self):
        super().validate_architecture()
        if self.scoring_func != "softmax":  # the only scoring the original implements
            raise ValueError(f"DeepSeekMoE scoring_func={self.scoring_func!r}: only 'softmax' exists")

    def is_moe_layer(self, layer_idx: int) -> bool:
        return (
            self.n_routed_experts is not None
            and layer_idx >= self.first_k_dense_replace
            and layer_idx % self.moe_layer_freq == 0
        )
