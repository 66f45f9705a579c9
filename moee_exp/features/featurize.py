"""Texts → pooled features for one model and prompt: prompting, lazy model loading, extraction.

A loaded model is kept for the life of the process and reused by the next job with the same model settings
(Hydra's basic launcher runs every job of a sweep in one process), so a sweep loads it once. With a feature cache
(moee_exp.features.cache), texts whose features are cached are not extracted again, and the model (and its tokenizer) is
loaded only on the first miss.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping

import numpy as np
import torch

from ..errors import NonFiniteFeatureError, ReadOnlyCacheError
from ..files import writable
from .cache import CacheMiss, FeatureCache, text_keys
from .extract import (
    DEFAULT_FEATURES,
    EXTRACTION_VERSION,
    clean_texts,
    extract,
    prompt_texts,
)
from .identity import model_identity
from .loading import (
    LoadedModel,
    ModelConfig,
    check_max_length,
    load_model,
    model_config,
)
from .prompts import check_template
from .tiny import ensure_tiny_model

log = logging.getLogger(__name__)

TRUNCATED = "truncated"  # cached beside the features, so a cache hit still counts truncated texts
LOAD_KEYS = ("name_or_path", "revision", "dtype", "quantization", "device", "trust_remote_code",
             "experts_implementation", "quantize_routers")
_loaded: dict[tuple, LoadedModel] = {}
COLLECT_BYTES = 256 * 2**20  # a model on the CPU smaller than this is freed without a full garbage collection
load_count = 0  # how many times a model was actually constructed in this process (tests assert on it)


def model_path(model: ModelConfig | Mapping) -> str:
    """The checkpoint to load: the configured hub id / dir, or the tiny model built on first use."""
    model = model_config(model)
    if model.tiny:
        return str(ensure_tiny_model(dict(model.tiny), model.cache_dir))  # spec checked by check_model
    if not model.name_or_path:
        raise ValueError("model.name_or_path is empty: give a hub id (e.g. allenai/OLMoE-1B-7B-0924) or a local dir")
    return str(model.name_or_path)


def get_model(model: ModelConfig | Mapping) -> LoadedModel:
    global load_count
    model = model_config(model)
    path = model_path(model)
    key = (path,) + tuple(str(getattr(model, k)) for k in LOAD_KEYS[1:])
    if key not in _loaded:
        _free_previous()
        kwargs = {k: getattr(model, k) for k in LOAD_KEYS[1:] if getattr(model, k) is not None}
        _loaded[key] = load_model(path, **kwargs)
        load_count += 1
    return _loaded[key]


def _free_previous() -> None:
    """One model at a time: drop the previous one before loading the next. Only a large or GPU-held model is worth
    a full garbage collection (it walks every object of the process: ~0.2 s once mteb and transformers are
    imported, more in a process that holds more)."""
    if not _loaded:
        return
    (previous,) = _loaded.values()
    params = list(previous.model.parameters())
    large = sum(p.numel() * p.element_size() for p in params) > COLLECT_BYTES or any(p.device.type != "cpu" for p in params)
    _loaded.clear()
    del previous, params
    if large:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class Featurizer:
    """Callable texts → pooled features {"hs": (n, hidden), "rw": (n, layers, experts), ...} for one model × prompt."""

    takes_sink = True  # __call__(..., sink=): see moee_exp.scoring.encoder

    def __init__(
        self,
        model: ModelConfig | Mapping,
        template: str,
        normalize: bool = True,
        progress: bool = True,
        features=DEFAULT_FEATURES,
        cache: FeatureCache | None = None,
        text_mode: str = "clean",
    ):
        self.model = model_config(model)
        self.cache = cache
        self._namespaces: dict[str, object] = {}
        self.text_mode = text_mode  # clean | paper: moee_exp.features.prompts.apply_prompt
        self.features = tuple(features)
        self.template = check_template(template)
        self.normalize = normalize
        self.progress = progress
        self.n_truncated = 0

    def namespace(self, instruction: str = ""):
        """This model × prompt × instruction × settings' part of the feature cache (see moee_exp.features.cache for what
        keys it). The instruction and the text mode are part of what is extracted, so they key it too (added only
        when not the defaults, so caches written before they existed stay valid)."""
        if instruction not in self._namespaces:
            identity = {
                "model": model_identity(self.model),
                "template": self.template,
                "normalize": bool(self.normalize),
                "max_length": int(self.model.max_length),
                "extraction_version": EXTRACTION_VERSION,
            }
            if instruction:
                identity["instruction"] = instruction
            if self.text_mode != "clean":
                identity["text_mode"] = self.text_mode
            self._namespaces[instruction] = self.cache.namespace(identity)
        return self._namespaces[instruction]

    def __call__(self, texts: list[str], desc: str | None = None, sink=None,
                 instruction: str = "") -> dict[str, np.ndarray]:
        """``sink`` (e.g. moee_exp.scoring.fuse.SumSink) says where some features go, as (n, value shapes) -> {feature:
        (out, rows_fn)}: those are written to ``out`` through ``rows_fn`` (straight from the cache when cached).
        ``instruction`` is prepended to each text inside the template (protocol=paper; part of the cache key)."""
        texts = clean_texts(texts)  # None -> '', lone surrogates -> U+FFFD: nothing crashes the tokenizer
        sent = ()
        if self.cache is None or not texts:
            feats, truncated = self._extract(texts, desc, instruction)
        else:
            for attempt in range(3):
                try:
                    feats, truncated, sent = self._cached(texts, desc, sink, instruction)
                    break
                except CacheMiss:  # a shard vanished or went bad under us: look the texts up again
                    if attempt == 2:
                        raise
        n_truncated = int(np.count_nonzero(truncated))
        if n_truncated:
            max_length = int(self.model.max_length)
            log.warning("%s: %d text(s) truncated to max_length=%d", desc or "", n_truncated, max_length)
        self.n_truncated += n_truncated
        if sink is not None and not sent:  # not read from the cache: the values in hand go to the sink
            for name, (out, rows_fn) in sink(len(texts), {f: feats[f].shape[1:] for f in feats}).items():
                out[...] = rows_fn(feats[name])
                feats[name] = out
        return feats

    def _cached(self, texts: list[str], desc: str | None, sink=None, instruction: str = ""):
        """Features from the cache; the texts missing any requested feature are extracted (once each) and stored."""
        ns = self.namespace(instruction)
        # Each distinct text is hashed and looked up once (a dataset's texts repeat: TwitterURLCorpus hands the
        # encoder 103k texts, 45k distinct); ``inverse`` maps each text to its distinct one.
        distinct = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        inverse = np.fromiter(map(distinct.__getitem__, texts), np.int64, len(texts))
        keys = text_keys(list(distinct))
        names = (*dict.fromkeys(self.features), TRUNCATED)
        locs = {name: ns.locate(keys, name) for name in names}  # (shard, row) of each distinct text; -1: missing
        missing = ~np.logical_and.reduce([loc[:, 0] >= 0 for loc in locs.values()])
        first = {}  # key -> index in texts of its first occurrence, for the distinct texts missing a feature
        if missing.any() and not writable(ns.path):  # a shared read-only cache: fail before any model is loaded
            raise ReadOnlyCacheError(
                f"cache.dir={self.cache.root} is read-only and lacks the features of "
                f"{int(missing.sum())} text(s){f' of {desc}' if desc else ''}: point "
                "cache.dir at a writable dir (or use cache=off) to extract them"
            )
        if missing.any():
            with ns.extract_lock():  # a concurrent job of the sweep may be extracting them right now: take turns
                locs = {name: ns.locate(keys, name) for name in names}  # ... and read what it stored meanwhile
                missing = ~np.logical_and.reduce([loc[:, 0] >= 0 for loc in locs.values()])
                if missing.any():
                    first_at = np.unique(inverse, return_index=True)[1]
                    first = {keys[u]: int(first_at[u]) for u in np.flatnonzero(missing)}
                    fresh = self._extract_missing(texts, first, desc, instruction)
                    for name in names:
                        ns.put(list(first), name, fresh[name])
        log.info("%s: %d text(s), %d from the feature cache, %d extracted", desc or "features", len(texts),
                 len(texts) - int(np.count_nonzero(missing[inverse])), len(first))
        # Read back what was just stored, so this call returns exactly what a later cache hit will.
        if first:
            locs = {name: ns.locate(keys, name) for name in names}
        stored = {name: loc[:, 0] >= 0 for name, loc in locs.items()}
        targets = {}
        if sink is not None and all(stored[name].all() for name in self.features):
            targets = sink(len(texts), {name: ns.value_shape(keys[0], name) for name in self.features})
        out = {}
        for name in names:
            if stored[name].all():
                out[name] = ns.read(locs[name][inverse], name, *targets.get(name, ()))
                continue
            # the cache could not store them (logged): the fresh values, as extracted
            fresh_at = {k: j for j, k in enumerate(first)}
            in_cache = stored[name][inverse]
            todo, rows = np.flatnonzero(~in_cache), np.flatnonzero(in_cache)
            value = fresh[name][[fresh_at[keys[inverse[i]]] for i in todo]]
            out[name] = np.empty((len(texts), *value.shape[1:]), value.dtype)
            out[name][todo] = value
            if len(rows):
                out[name][rows] = ns.read(locs[name][inverse[rows]], name)
        return {name: out[name] for name in self.features}, out[TRUNCATED], tuple(targets)

    def _extract_missing(self, texts: list[str], first: dict, desc: str | None, instruction: str = "") -> dict:
        try:
            fresh, fresh_truncated = self._extract([texts[i] for i in first.values()], desc, instruction)
        except NonFiniteFeatureError as err:  # name the texts by their index in this call, not in the subset
            raise err.reindexed(list(first.values())) from None
        fresh[TRUNCATED] = fresh_truncated
        return fresh

    def _extract(self, texts: list[str], desc: str | None, instruction: str = ""):
        lm = get_model(self.model)
        max_length = int(self.model.max_length)
        check_max_length(lm.model.config, max_length)  # a hub config unreadable before the load is checked here
        prompted = prompt_texts(texts, self.template, lm.tokenizer, max_length, self.normalize, instruction,
                                self.text_mode)
        feats = extract(
            lm,
            prompted.texts,
            batch_size=int(self.model.batch_size),
            max_length=max_length,
            padding_side=self.model.padding_side,
            features=self.features,
            desc=desc,
            progress=self.progress,
            truncate=self.text_mode != "paper",
        )
        return feats, np.array(prompted.truncated or [False] * len(texts), dtype=bool)
