"""DeepSeekMoE (deepseek-ai/deepseek-moe-16b-base, model_type "deepseek") for today's transformers.

The checkpoint ships modeling code for transformers ~4.36 as hub remote code, which does not import on
transformers 5 (it needs attention-mask helpers that were removed). This is the same architecture written with
transformers' own building blocks: Llama attention (standard multi-head attention + RoPE), Llama RMSNorm and
rotary embedding, DeepSeek-V3's SwiGLU MLP. Only the MoE layer is ours (DeepSeekMoE, Dai et al. 2024):

    y = shared(x) + sum_{e in topk(s)} g_e * expert_e(x),   s = softmax(x W_gate^T),
    g = s[topk] (renormalised to sum 1 only if norm_topk_prob)

over ``n_routed_experts`` fine-grained routed experts, plus ``n_shared_experts`` always-on experts fused into one
MLP of width ``n_shared_experts * moe_intermediate_size``. Layers ``i >= first_k_dense_replace`` with
``i % moe_layer_freq == 0`` are MoE, the rest dense. Module names equal the official checkpoint's weight names, so
its safetensors load unchanged. The router is recorded for ``output_router_logits`` (pre-softmax logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    MoeCausalLMOutputWithPast,
    MoeModelOutputWithPast,
)
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MLP
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_deepseek import DeepseekConfig


class DeepseekMoEGate(nn.Module):
    """Softmax top-k router: a (n_routed_experts, hidden) weight and no bias (checkpoint name ``mlp.gate.weight``)."""

    def __init__(self, config: DeepseekConfig):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        self.weight = nn.Parameter(torch.empty(config.n_routed_experts, config.hidden_size))

    def forward(self, hidden_states: torch.Tensor):
        logits = F.linear(hidden_states, self.weight)  # (tokens, experts), pre-softmax
        scores = logits.softmax(dim=-1)
        top_weight, top_index = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
        if self.top_k > 1 and self.norm_topk_prob:
            top_weight = top_weight / (top_weight.sum(dim=-1, keepdim=True) + 1e-20)  # epsilon as the original
        return logits, top_weight, top_index


class DeepseekMoE(nn.Module):
    """Routed experts (weighted by the gate, no renormalisation by default) plus ungated shared experts."""

    def __init__(self, config: DeepseekConfig):
        super().__init__()
        width = config.moe_intermediate_size
        self.experts = nn.ModuleList([DeepseekV3MLP(config, intermediate_size=width) for _ in range(config.n_routed_experts)])
        self.gate = DeepseekMoEGate(config)
        self.shared_experts = None
        if config.n_shared_experts is not None:
            width = config.moe_intermediate_size * config.n_shared_experts
            self.shared_experts = DeepseekV3MLP(config, intermediate_size=width)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = hidden_states.shape
        flat = hidden_states.reshape(-1, shape[-1])
        _, top_weight, top_index = self.gate(flat)
        routed = torch.zeros_like(flat)
        # Loop over the experts that got tokens; each token's k outputs are summed with its gate weights.
        for e in top_index.unique().tolist():
            token, slot = torch.where(top_index == e)
            out = self.experts[e](flat[token]) * top_weight[token, slot, None].to(flat.dtype)
            routed.index_add_(0, token, out)
        routed = routed.view(shape)
        if self.shared_experts is not None:
            routed = routed + self.shared_experts(hidden_states)
        return routed


class DeepseekDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: DeepseekConfig, layer_idx: int):
        super().__init__()
        self.self_attn = LlamaAttention(config=config, layer_idx=layer_idx)
        self.mlp = DeepseekMoE(config) if config.is_moe_layer(layer_idx) else DeepseekV3MLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=False, position_embeddings=None, **kwargs):
        residual = hidden_states
        hidden_states, _ = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = residual + hidden_states
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class DeepseekPreTrainedModel(PreTrainedModel):
    config_class = DeepseekConfig
    config: DeepseekConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DeepseekDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "router_logits": OutputRecorder(DeepseekMoEGate, index=0),
        "hidden_states": DeepseekDecoderLayer,
        "attentions": LlamaAttention,
    }

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, DeepseekMoEGate):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)


class DeepseekModel(DeepseekPreTrainedModel):
    def __init__(self, config: DeepseekConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([DeepseekDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> MoeModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if position_ids is None:  # like the original: positions count from the first (padded) slot
            past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = (torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen).unsqueeze(0)
        mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            position_ids=position_ids,
        )
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = layer(
                hidden_states,
                position_embeddings=position_embeddings,
                attention_mask=mask,
                position_ids=position_ids,
                past_key_values=past_key_values,
                use_cache=use_cache,
                **kwargs,
            )
        return MoeModelOutputWithPast(last_hidden_state=self.norm(hidden_states), past_key_values=past_key_values)


class DeepseekForCausalLM(DeepseekPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: DeepseekConfig):
        super().__init__(config)
        self.model = DeepseekModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> MoeCausalLMOutputWithPast:
        outputs: MoeModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = self.loss_function(logits, labels, self.vocab_size, **kwargs) if labels is not None else None
        return MoeCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            router_logits=outputs.router_logits,
        )


if CONFIG_MAPPING[DeepseekConfig.model_type] is DeepseekConfig:  # ours (not a later transformers' own "deepseek")
    AutoModel.register(DeepseekConfig, DeepseekModel)
    AutoModelForCausalLM.register(DeepseekConfig, DeepseekForCausalLM)
