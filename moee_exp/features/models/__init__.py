"""Model types this project owns, for MoE checkpoints whose hub code no longer runs on today's transformers.

Importing this package registers their configs with AutoConfig under the checkpoint's model_type (a config read:
transformers' config classes only). Importing a model's module (``deepseek_moe``) registers its classes with
AutoModel / AutoModelForCausalLM, which imports transformers' modeling stack. Then
``AutoConfig/AutoModel/AutoModelForCausalLM.from_pretrained(path)`` with ``trust_remote_code=False`` builds our class
from the official config.json and loads its weights unchanged; transformers 5 prefers a class registered this way over
the checkpoint's ``auto_map`` even with ``trust_remote_code=True``, so the old hub code is never run.
"""

from transformers import AutoConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .configuration_deepseek import DeepseekConfig

if DeepseekConfig.model_type not in CONFIG_MAPPING:  # a later transformers that ships it natively: theirs wins
    AutoConfig.register(DeepseekConfig.model_type, DeepseekConfig)

__all__ = ["DeepseekConfig"]
