"""The one place a composed Hydra config becomes a typed job: schemas registered, values checked, pieces typed.

Each conf/<group>/*.yaml starts from its schema (``defaults: [base_<group>]``), so a misspelt key or a value of the
wrong type fails at composition. A schema lives beside the stage it configures (ModelConfig in features.loading,
CacheConfig in features.cache, PromptConfig in features.prompts, EmbConfig in scoring.fuse (the emb group mirrors fuse()), WeightsConfig in
scoring.weights, LoggerConfig in jobs.record; here ProtocolConfig, which spans stages, and TasksConfig, whose module
imports mteb). ``validate`` turns the mistakes types cannot catch into one-line errors, and ``read_job`` returns the Job
whose typed pieces the runner hands to each stage: nothing downstream reads the DictConfig again.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from ..errors import ConfigError
from ..features.cache import CACHE_DTYPES, CacheConfig
from ..features.extract import FEATURES
from ..features.instructions import FORMATS, MODES, Instructions
from ..features.loading import DTYPES, QUANTIZATIONS, ModelConfig, check_device
from ..features.prompts import TEMPLATES, TEXT_MODES, PromptConfig, check_template
from ..scoring.fuse import KINDS, RW_ACTIVATIONS, STANDARDIZE, EmbConfig
from ..scoring.weights import CRITERIA, OPTIONS, WeightsConfig
from .record import LoggerConfig

TASK_DATA = ("real", "synthetic")
PROTOCOLS = ("paper", "clean")
SUM_SCORINGS = ("similarity", "paper")
SYNTHETIC_SIZES = ("small", "real")  # moee_exp.scoring.synthetic_tasks.SIZES (not imported here: it imports datasets)


@dataclass
class SyntheticDataConfig:
    size: str = "small"  # small (a few rows per split) | real (the real data's counts and text lengths)
    seed: int = field(default=0, metadata={"min": 0})  # numpy's generators take no negative seed


@dataclass
class TasksConfig:
    name: str = "custom"
    names: list[str] = field(default_factory=list)
    # An mteb benchmark (mteb.get_benchmark name): its tasks are taken as the benchmark defines them (its language
    # subsets and splits, e.g. STS17 en-en only in MTEB(eng, v2)), not as mteb.get_task(name) gives them.
    benchmark: str | None = None
    # real: each task's own data (HF hub or cache). synthetic: the same mteb task classes (splits, subsets,
    # evaluators, main scores) on generated data of their schema, offline: a dry run of a task set
    # (moee_exp/scoring/synthetic_tasks.py). Its scores mean nothing.
    data: str = "real"
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)


@dataclass
class ProtocolConfig:
    """Which computation a job runs: ``paper`` (the public code's, conf/protocol/paper.yaml) or ``clean`` (batch-
    independent embeddings, a true similarity sum; conf/protocol/clean.yaml). The protocol files also set
    emb.standardize, emb.rw_activation and model.quantization / quantize_routers; each stays overridable."""

    name: str = "clean"  # recorded in every row, the run name, W&B and the mteb model name
    instructions: str = "none"  # none | e5 (mteb metadata + our table; moee_exp.features.instructions) | custom
    instruction_table: dict[str, Any] = field(default_factory=dict)  # task -> str | {query, document}
    instruction_format: str = "gritlm"  # gritlm ("<|user|>\n{instruction}\n<|embed|>\n") | plain
    text: str = "clean"  # clean (strip, empty -> '.', cut at max_length) | paper (none of these: prompts.apply_prompt)
    sum_scoring: str = "similarity"  # moee_sum: similarity (a true similarity sum) | paper (moee_exp.scoring.paper_scoring)
    standardize_by_kind: dict[str, str] = field(default_factory=dict)  # emb kind -> emb.standardize (paper)


_SCHEMAS = [
    ("model", ModelConfig),
    ("emb", EmbConfig),
    ("weights", WeightsConfig),
    ("prompt", PromptConfig),
    ("tasks", TasksConfig),
    ("logger", LoggerConfig),
    ("cache", CacheConfig),
    ("protocol", ProtocolConfig),
]


def register() -> None:
    """Store each group's schema in Hydra's ConfigStore (once: storing builds the structured config, ~8 ms each,
    and every read_job asks)."""
    cs = ConfigStore.instance()
    for group, node in _SCHEMAS:
        stored = cs.repo.get(group, {}).get(f"base_{group}.yaml")
        if stored is None or OmegaConf.get_type(stored.node) is not node:
            cs.store(group=group, name=f"base_{group}", node=_open_tables(node))


# Fields whose keys are the user's (task names): open to new keys under Hydra's struct mode, so that the README's
# `protocol.instruction_table={STS12: "..."}` works as written, without a leading +.
OPEN_TABLES = {ProtocolConfig: ("instruction_table",)}


def _open_tables(schema):
    if schema not in OPEN_TABLES:
        return schema
    node = OmegaConf.structured(schema)
    for name in OPEN_TABLES[schema]:
        OmegaConf.set_struct(node[name], False)
    return node


def schemas() -> dict[str, type]:
    """Every config group's typed schema as registered in Hydra's ConfigStore: {group: dataclass}.

    The generic checks below and the property-based tests (tests/test_fuzz.py) walk these, so a new group or key
    is checked and fuzzed without being listed anywhere.
    """
    register()
    out = {}
    for group, entries in ConfigStore.instance().repo.items():
        node = entries.get(f"base_{group}.yaml") if isinstance(entries, dict) else None
        schema = OmegaConf.get_type(node.node) if node is not None else None
        if dataclasses.is_dataclass(schema):
            out[group] = schema
    return out


# Generic bounds for every number in every schema: beyond these a value is a typo, and it would overflow float32
# embeddings (e.g. sqrt(alpha) * RW) or a torch / numpy int64 long after the model has loaded.
MAX_FLOAT = 1e12
MAX_INT = 2**31 - 1


def _check_numbers(resolved: dict) -> None:
    """Every float of every schema finite and within +-MAX_FLOAT; every int within its field's metadata["min"]
    (if any) and MAX_INT. A NaN or inf otherwise reaches scikit-learn after the model ran."""
    for group, schema in schemas().items():
        _check_node(resolved.get(group), schema, group)


def _nested_schema(f: dataclasses.Field):
    """The dataclass of a nested schema field (e.g. TasksConfig.synthetic), or None."""
    if f.default_factory is dataclasses.MISSING:
        return None
    made = f.default_factory()
    return type(made) if dataclasses.is_dataclass(made) else None


def _check_node(node, schema, prefix: str) -> None:
    if not isinstance(node, dict):
        return
    for f in dataclasses.fields(schema):
        value, key = node.get(f.name), f"{prefix}.{f.name}"
        nested = _nested_schema(f)
        if nested is not None:  # a nested group of fields (tasks.synthetic.*): the same checks, one line each
            _check_node(value, nested, key)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} is not a finite number: give a number such as {f.default!r}")
        low, high = f.metadata.get("min"), f.metadata.get("max", MAX_FLOAT if isinstance(value, float) else MAX_INT)
        if low is not None and value < low:
            raise ConfigError(f"{key}={value} must be >= {low} (default {f.default!r})")
        if abs(value) > high:
            raise ConfigError(f"{key}={value} is too large (at most {high:g}; default {f.default!r})")


def _check_interpolations(cfg) -> dict:
    """Every ${...} in the job's config resolves (hydra's own node aside: it resolves only inside a job). Returns
    each top-level key's value, resolved to plain Python (checked and kept by read_job: resolving walks the tree)."""
    resolved = {}
    for key in cfg:
        if key == "hydra":
            continue
        try:
            node = cfg[key]
            resolved[key] = OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) \
                else node
        except InterpolationResolutionError as err:
            reason = str(err).splitlines()[0]
            raise ConfigError(f"{err.full_key or key}: {reason}; fix or quote the ${{...}} in its value") from None
    return resolved


def _check_tiny(tiny) -> None:
    if tiny is None:
        return
    if not isinstance(tiny, DictConfig) or not isinstance(tiny.get("model_type"), str):
        raise ConfigError(
            f"model.tiny={tiny!r} is not a tiny-model spec: use model=tiny (or another tiny_* option), or "
            "model.tiny=null with model.name_or_path set"
        )
    for key, kind in (("seed", int), ("vocab_size", int), ("config", DictConfig)):
        value = tiny.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise ConfigError(f"model.tiny.{key}={value!r} must be a {kind.__name__}; see conf/model/tiny.yaml")
    if not 64 <= int(tiny.get("vocab_size", 512)) <= 1_000_000:
        raise ConfigError("model.tiny.vocab_size must be between 64 and 1000000 (tiny default: 512)")


def _check_writable_dir(path, key: str) -> None:
    """A dir the job will write into: it, or the nearest existing parent, must be a writable dir."""
    p = Path(str(path)).expanduser().absolute()
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        what = "is not a dir" if not probe.is_dir() else "is not writable"
        raise ConfigError(f"{key}={str(path)!r} cannot be used: {str(probe)!r} {what}; point {key} at a writable dir")


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


def validate_protocol(p) -> None:
    _choice(p.name, PROTOCOLS, "protocol.name")
    _choice(p.instructions, MODES, "protocol.instructions")
    _choice(p.instruction_format, tuple(FORMATS), "protocol.instruction_format")
    _choice(p.text, TEXT_MODES, "protocol.text")
    _choice(p.sum_scoring, SUM_SCORINGS, "protocol.sum_scoring")
    for task, entry in p.instruction_table.items():
        ok = isinstance(entry, str) or (
            isinstance(entry, DictConfig) and set(entry) <= {"query", "document"}
            and all(isinstance(v, str) for v in entry.values())
        )
        if not ok:
            raise ConfigError(
                f"protocol.instruction_table.{task}={entry!r} must be a string or {{query: ..., document: ...}}"
            )
    if p.instructions == "custom" and not p.instruction_table:
        raise ConfigError("protocol.instructions=custom needs protocol.instruction_table={task: instruction, ...}")


def validate(cfg) -> dict:
    """Raise ConfigError naming the key and the fix for values the schemas' types allow but the code does not.
    Returns the config resolved to plain Python, top-level key by key (hydra's node aside)."""
    try:  # emb.kind first: the protocol's per-kind settings interpolate it (its own ${...}: reported below)
        _choice(cfg.emb.kind, KINDS, "emb.kind")
    except InterpolationResolutionError:
        pass
    resolved = _check_interpolations(cfg)
    m, e = cfg.model, cfg.emb
    _check_numbers(resolved)
    _choice(m.dtype, ("auto", *DTYPES), "model.dtype")
    _choice(m.quantization, QUANTIZATIONS, "model.quantization")
    _choice(m.padding_side, ("left", "right"), "model.padding_side")
    check_device(m.device, "model.device", here=False)  # is a device name; whether it is on this machine: check_here
    _check_tiny(m.tiny)
    if not m.tiny and not m.name_or_path:
        raise ConfigError("model.name_or_path is empty: set a hub id (e.g. allenai/OLMoE-1B-7B-0924) or a local dir")
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
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"prompt.template: {err}") from None
    if not cfg.tasks.names:
        raise ConfigError("tasks.names is empty: pick a task set (tasks=demo, tasks=paper, tasks=sts, ...)")
    _choice(cfg.tasks.get("data", "real"), TASK_DATA, "tasks.data")
    if "synthetic" in cfg.tasks:  # checked whatever tasks.data says: a typo is caught before the dry run it is for
        _choice(cfg.tasks.synthetic.size, SYNTHETIC_SIZES, "tasks.synthetic.size")
    _choice(cfg.logger.backend, ("wandb", "none"), "logger.backend")
    if "cache" in cfg:
        _choice(cfg.cache.dtype, CACHE_DTYPES, "cache.dtype")
    if "protocol" in cfg:
        validate_protocol(cfg.protocol)
    _choice(m.get("paper_rw_activation", "logits"), RW_ACTIVATIONS, "model.paper_rw_activation")
    _choice(m.get("paper_quantization", "4bit"), QUANTIZATIONS, "model.paper_quantization")
    _choice(cfg.logger.mode, ("offline", "online"), "logger.mode")
    if cfg.logger.backend == "wandb":
        _check_wandb_project(cfg.logger.project)
        if any(not str(tag).strip() for tag in cfg.logger.tags):
            raise ConfigError(f"logger.tags={list(cfg.logger.tags)!r} has an empty tag: W&B tags are 1-64 characters")
    for key in ("overwrite", "progress"):  # top-level switches (the root config has no schema)
        if not isinstance(cfg.get(key, False), bool):
            raise ConfigError(f"{key}={cfg.get(key)!r} must be true or false")
    predictions = cfg.get("predictions")
    if predictions is not None and (
        not isinstance(predictions, ListConfig) or not all(isinstance(t, str) for t in predictions)
    ):
        raise ConfigError(f"predictions={predictions!r} must be a list of mteb task types, e.g. [STS,Clustering] or []")
    if cfg.get("mteb_results") is not None and not isinstance(cfg.get("mteb_results"), str):
        raise ConfigError(f"mteb_results={cfg.get('mteb_results')!r} must be a dir (or null for off)")
    return resolved


def _check_wandb_project(value) -> None:
    # W&B's own rule for project names (wandb_settings.validate_project), checked before the model runs
    if not value or len(value) > 128 or any(c in value for c in "/\\#?%:"):
        raise ConfigError(f"logger.project={value!r} is not a W&B project name: 1-128 characters, none of / \\ # ? % :")


def check_here(cfg) -> None:
    """The checks that depend on the machine a job runs on (not run by the sweep preflight, which may run on a
    login node): the device exists here, and the dirs the job writes into are writable."""
    check_device(cfg.model.device, "model.device")
    if cfg.model.tiny:  # a read-only dir that holds the model serves it (one that lacks it: one line at the build)
        _check_cache_dir(cfg.model.cache_dir, "model.cache_dir")
    if cfg.get("cache") is not None and cfg.cache.enabled:
        _check_cache_dir(cfg.cache.dir)
    if cfg.get("mteb_results"):
        _check_creatable_dir(cfg.mteb_results, "mteb_results")


def _check_creatable_dir(path, key: str) -> None:
    """A dir the job creates and writes into: made now (as the job would make it), so that a path through a file,
    an unwritable or a full disk is one line before the model loads, not a traceback after the first dataset."""
    _check_writable_dir(path, key)
    p = Path(str(path)).expanduser()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{key}={str(path)!r} cannot be created ({err.strerror or err}); point {key} at a "
                          "writable dir, or set it to null") from None
    if not p.is_dir():
        raise ConfigError(f"{key}={str(path)!r} is not a dir; point {key} at a writable dir, or set it to null")


def _check_cache_dir(path, key: str = "cache.dir") -> None:
    """cache.dir must be writable, unless it is an existing dir this job can read: a read-only cache (a lab's shared
    features) serves every job whose features it holds; a job that misses one stops then (moee_exp.features.featurize)."""
    p = Path(str(path)).expanduser().absolute()
    if p.is_dir() and os.access(p, os.R_OK | os.X_OK):
        return
    _check_writable_dir(path, key)


@dataclass(frozen=True)
class Job:
    """One job's config, read once (``read_job``): the typed, validated pieces each stage receives.

    ``resolved`` is the whole config as plain values, kept for the records that hold all of it (the job dir's
    config.yaml, the W&B run's config, the rows' identity); no stage reads its settings from it.
    """

    model: ModelConfig
    emb: EmbConfig
    weights: WeightsConfig
    prompt: PromptConfig
    template: str  # the prompt's template, checked: prompt.template, or the paper's for prompt.name
    protocol: ProtocolConfig
    instructions: Instructions
    tasks: TasksConfig
    logger: LoggerConfig
    cache: CacheConfig
    overwrite: bool
    progress: bool
    predictions: tuple[str, ...]  # task types whose per-item predictions are saved
    mteb_results: str | None  # a dir for mteb's own result layout, or None
    # protocol=paper's MoEE(sum): scored outside mteb.evaluate, as the public code does (scoring.paper_scoring)
    paper_sum: bool
    resolved: dict


def read_job(cfg, here: bool = True) -> Job:
    """The one place a composed Hydra config becomes a Job: ``validate`` (and, with ``here``, ``check_here``), then
    each group as its schema's dataclass. Raises ConfigError (one line) for any mistake."""
    resolved = validate(cfg)  # (hydra's own node, present in a sweep callback's config, resolves only in a job)
    if here:
        check_here(cfg)
    typed = {group: OmegaConf.to_object(cfg[group]) for group in schemas() if group in cfg}
    for group, schema in schemas().items():  # a group composed without its schema (a hand-made config)
        if not isinstance(typed.get(group), schema):
            typed[group] = schema(**(resolved.get(group) or {}))
    protocol = typed["protocol"]
    return Job(
        **typed,
        template=template_of(typed["prompt"]),
        instructions=Instructions(protocol.instructions, protocol.instruction_table, protocol.instruction_format),
        overwrite=bool(cfg.get("overwrite", False)),
        progress=bool(cfg.get("progress", True)),
        predictions=tuple(cfg.get("predictions") or ()),
        mteb_results=cfg.get("mteb_results"),
        paper_sum=typed["emb"].kind == "moee_sum" and protocol.sum_scoring == "paper",
        resolved=resolved,
    )
