"""The feature path: a checkpoint and texts in, pooled features out (one forward pass per text, cached on disk).

loading (hub id / dir / tiny spec → LoadedModel: model, tokenizer, routers found by shape, router self-check)
→ prompts, instructions (a text → the string the model reads) → extract (hooks: HS and every router's logits at the
pooled token, checked finite) → cache (pooled features on disk per model × prompt × text, shared by concurrent jobs)
→ featurize (the Featurizer: texts → {feature: array}, extracting only what the cache lacks). tiny builds the tiny
random models; models holds our own model classes (DeepSeekMoE). Enters: a model config (plain values) and texts.
Leaves: float32 arrays, one row per text.
"""
