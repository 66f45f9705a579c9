"""Model classes this project owns for MoE checkpoints whose hub code no longer runs on today's transformers.

Importing this package registers them with transformers' Auto classes under the checkpoint's model_type, so
``AutoConfig/AutoModel/AutoModelForCausalLM.from_pretrained(path)`` with ``trust_remote_code=False`` builds our
class from the official config.json and loads its weights unchanged. transformers 5 prefers a class registered this
way over the checkpoint's ``auto_map`` even with ``trust_remote_code=True``, so the old hub code is never run.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .deepseek_moe import DeepseekConfig, DeepseekForCausalLM, DeepseekModel


def _register(config_cls, base_cls, causal_lm_cls) -> None:
    if config_cls.model_type in CONFIG_MAPPING:  # a later transformers ships it natively: theirs wins
        return
    AutoConfig.register(config_cls.model_type, config_cls)
    AutoModel.register(config_cls, base_cls)
    AutoModelForCausalLM.register(config_cls, causal_lm_cls)


_register(DeepseekConfig, DeepseekModel, DeepseekForCausalLM)

__all__ = ["DeepseekConfig", "DeepseekForCausalLM", "DeepseekModel"]
