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

TASK_DATA = ("real", "synthetic")
SYNTHETIC_SIZES = ("small", "real")  # moee_exp.synthetic_tasks.SIZES (not imported here: it imports datasets)


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
    alpha: float | None = None  # moved to weights.alpha (the `weights` group); set here it is an error naming that
    rw_activation: str = "logits"  # logits (public code's OLMoE/Qwen numbers) | softmax (the paper's text)
    standardize: str = "none"  # none | text | batch (public code, batch-dependent)
    standardize_batch_size: int = 128
    hs_feature: str = "hs"  # pooling of the HS block: hs | hs_mean_tokens | hs_mean_layers | hs_mean_tokens_layers
    rw_feature: str = "rw"  # pooling of the RW block: rw | rw_mean_tokens


@dataclass
class WeightsConfig:
    """How MoEE(sum)'s similarity weight α (similarity = cos HS + α cos RW) is chosen: moee_exp.weights."""

    name: str = "fixed"  # fixed | grid | auto | dev: recorded in every row as `weights`
    alpha: float = 1.0  # fixed, grid: this job's α (grid sweeps it under -m); auto, dev: unused
    criterion: str = "calibration"  # auto: calibration (per model x prompt, fixed unlabeled texts) | spread (per task)
    sample: int = 512  # auto: at most this many distinct texts (picked by hash) whose pairs measure the spreads
    grid: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(1, 11)])  # dev: candidates
    dev_fraction: float = 0.2  # dev, Classification: share of the training split held out to score the grid


@dataclass
class PromptConfig:
    name: str = "none"
    template: str | None = None  # None: the paper's template for `name`
    normalize: bool = True  # the public code's clean-up of the text (moee_exp.prompts.normalize_text)


@dataclass
class SyntheticDataConfig:
    size: str = "small"  # small (a few rows per split) | real (the real data's counts and text lengths)
    seed: int = 0


@dataclass
class TasksConfig:
    name: str = "custom"
    names: list[str] = field(default_factory=list)
    # real: each task's own data (HF hub or cache). synthetic: the same mteb task classes (splits, subsets,
    # evaluators, main scores) on generated data of their schema, offline: a dry run of a task set
    # (moee_exp/synthetic_tasks.py). Its scores mean nothing.
    data: str = "real"
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)


@dataclass
class CacheConfig:
    enabled: bool = True  # false: every job extracts its features again (the public code's behaviour)
    dir: str = "${paths.cache_dir}/features"  # shared by concurrent jobs (joblib, SLURM arrays) on one filesystem
    dtype: str = "float32"  # float32 | float16 (half the disk; features rounded to float16)
    lock: bool = True  # concurrent jobs take turns to extract, so each text is extracted once (moee_exp.cache)


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
        ("weights", WeightsConfig),
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


def validate_weights(w) -> None:
    from .weights import CRITERIA, OPTIONS

    _choice(w.name, OPTIONS, "weights.name")
    _choice(w.criterion, CRITERIA, "weights.criterion")
    if w.alpha < 0:
        raise ConfigError(f"weights.alpha={w.alpha} must be >= 0 (it weights cos(RW) in MoEE(sum))")
    if not w.grid or min(w.grid) < 0:
        raise ConfigError(f"weights.grid={list(w.grid)} must be a non-empty list of alphas >= 0")
    if w.sample < 2:
        raise ConfigError(f"weights.sample={w.sample} must be >= 2 (texts whose pairs measure the spreads)")
    if not 0 < w.dev_fraction < 1:
        raise ConfigError(f"weights.dev_fraction={w.dev_fraction} must be between 0 and 1")


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
    if e.get("alpha") is not None:
        raise ConfigError(f"emb.alpha is now weights.alpha (the similarity weights group): use weights.alpha={e.alpha}")
    if "weights" in cfg:
        validate_weights(cfg.weights)
    try:
        template_of(cfg.prompt)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not cfg.tasks.names:
        raise ConfigError("tasks.names is empty: pick a task set (tasks=demo, tasks=paper, tasks=sts, ...)")
    _choice(cfg.tasks.get("data", "real"), TASK_DATA, "tasks.data")
    if cfg.tasks.get("data") == "synthetic":
        _choice(cfg.tasks.synthetic.size, SYNTHETIC_SIZES, "tasks.synthetic.size")
    _choice(cfg.logger.backend, ("wandb", "none"), "logger.backend")
    if "cache" in cfg:
        _choice(cfg.cache.dtype, CACHE_DTYPES, "cache.dtype")
    _choice(cfg.logger.mode, ("offline", "online"), "logger.mode")
    for key in ("overwrite", "progress"):  # top-level switches (the root config has no schema)
        if not isinstance(cfg.get(key, False), bool):
            raise ConfigError(f"{key}={cfg.get(key)!r} must be true or false")
