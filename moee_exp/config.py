"""Typed schemas for the conf/ groups (Hydra ConfigStore) and the checks Hydra's types cannot express.

Each conf/<group>/*.yaml starts from its schema (``defaults: [base_<group>]``), so a misspelt key or a value of
the wrong type fails at composition, and ``validate`` turns the remaining mistakes into one-line errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from .cache import CACHE_DTYPES
from .extract import FEATURES
from .fuse import KINDS, RW_ACTIVATIONS, STANDARDIZE
from .loading import DTYPES, QUANTIZATIONS
from .prompts import TEMPLATES, check_template


class ConfigError(ValueError):
    """A user mistake in the config: reported as one line, without a traceback."""


@dataclass
class ModelConfig:
    name: str = "model"  # short name used in results, tables and W&B
    name_or_path: str | None = None  # hub id or local dir
    tiny: Any = None  # {model_type, seed, vocab_size, config}: build a tiny random model instead
    revision: str | None = None
    dtype: str = "auto"  # auto = float32 on CPU, bfloat16 on GPU
    quantization: str = "none"  # none | 4bit (nf4) | 8bit, via bitsandbytes
    device: str = "auto"
    max_length: int = 512
    batch_size: int = 32
    padding_side: str = "left"
    trust_remote_code: bool = False
    cache_dir: str = "${paths.cache_dir}"


@dataclass
class EmbConfig:
    kind: str = "moee_sum"
    alpha: float = 1.0  # moee_sum: weight of cos(RW)
    rw_activation: str = "logits"  # logits (public code's OLMoE/Qwen numbers) | softmax (the paper's text)
    standardize: str = "none"  # none | text | batch (public code, batch-dependent)
    standardize_batch_size: int = 128
    hs_feature: str = "hs"  # pooling of the HS block: hs | hs_mean_tokens | hs_mean_layers | hs_mean_tokens_layers
    rw_feature: str = "rw"  # pooling of the RW block: rw | rw_mean_tokens


@dataclass
class PromptConfig:
    name: str = "none"
    template: str | None = None  # None: the paper's template for `name`
    normalize: bool = True  # the public code's clean-up of the text (moee_exp.prompts.normalize_text)


@dataclass
class TasksConfig:
    name: str = "custom"
    names: list[str] = field(default_factory=list)


@dataclass
class CacheConfig:
    enabled: bool = True  # false: every job extracts its features again (the public code's behaviour)
    dir: str = "${paths.cache_dir}/features"  # shared by concurrent jobs (joblib, SLURM arrays) on one filesystem
    dtype: str = "float32"  # float32 | float16 (half the disk; features rounded to float16)


@dataclass
class LoggerConfig:
    backend: str = "none"  # wandb | none
    project: str = "moee"
    entity: str | None = None
    mode: str = "offline"  # offline | online
    tags: list[str] = field(default_factory=list)


def register() -> None:
    cs = ConfigStore.instance()
    for group, node in [
        ("model", ModelConfig),
        ("emb", EmbConfig),
        ("prompt", PromptConfig),
        ("tasks", TasksConfig),
        ("logger", LoggerConfig),
        ("cache", CacheConfig),
    ]:
        cs.store(group=group, name=f"base_{group}", node=node)


def _choice(value, choices, key):
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of: {', '.join(map(str, choices))}")


def template_of(prompt_cfg) -> str:
    if prompt_cfg.template:
        return check_template(prompt_cfg.template)
    if prompt_cfg.name not in TEMPLATES:
        raise ConfigError(
            f"prompt.name={prompt_cfg.name!r} has no template; use one of {', '.join(TEMPLATES)} "
            "or set prompt.template='... {text} ...'"
        )
    return TEMPLATES[prompt_cfg.name]


def validate(cfg) -> None:
    """Raise ConfigError naming the key and the fix for values the schemas' types allow but the code does not."""
    m, e = cfg.model, cfg.emb
    _choice(m.dtype, ("auto", *DTYPES), "model.dtype")
    _choice(m.quantization, QUANTIZATIONS, "model.quantization")
    _choice(m.padding_side, ("left", "right"), "model.padding_side")
    if m.max_length < 8 or m.batch_size < 1:
        raise ConfigError("model.max_length must be >= 8 and model.batch_size >= 1")
    if not m.tiny and not m.name_or_path:
        raise ConfigError("model.name_or_path is empty: set a hub id (e.g. allenai/OLMoE-1B-7B-0924) or a local dir")
    _choice(e.kind, KINDS, "emb.kind")
    _choice(e.rw_activation, RW_ACTIVATIONS, "emb.rw_activation")
    _choice(e.standardize, STANDARDIZE, "emb.standardize")
    _choice(e.hs_feature, [f for f in FEATURES if f.startswith("hs")], "emb.hs_feature")
    _choice(e.rw_feature, [f for f in FEATURES if f.startswith("rw")], "emb.rw_feature")
    if e.alpha < 0:
        raise ConfigError(f"emb.alpha={e.alpha} must be >= 0 (it weights cos(RW) in MoEE(sum))")
    try:
        template_of(cfg.prompt)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not cfg.tasks.names:
        raise ConfigError("tasks.names is empty: pick a task set (tasks=demo, tasks=paper, tasks=sts, ...)")
    _choice(cfg.logger.backend, ("wandb", "none"), "logger.backend")
    if "cache" in cfg:
        _choice(cfg.cache.dtype, CACHE_DTYPES, "cache.dtype")
    _choice(cfg.logger.mode, ("offline", "online"), "logger.mode")
    for key in ("overwrite", "progress"):  # top-level switches (the root config has no schema)
        if not isinstance(cfg.get(key, False), bool):
            raise ConfigError(f"{key}={cfg.get(key)!r} must be true or false")
    if cfg.get("mteb_results") is not None and not isinstance(cfg.get("mteb_results"), str):
        raise ConfigError(f"mteb_results={cfg.get('mteb_results')!r} must be a dir (or null for off)")
