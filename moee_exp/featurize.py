"""Texts → pooled features for one model and prompt: prompting, lazy model loading, extraction.

A loaded model is kept for the life of the process and reused by the next job with the same model settings
(Hydra's basic launcher runs every job of a sweep in one process), so a sweep loads it once.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping

import numpy as np
import torch

from .extract import DEFAULT_FEATURES, extract, prompt_texts
from .loading import LoadedModel, load_model
from .prompts import check_template
from .tiny import ensure_tiny_model

log = logging.getLogger(__name__)

LOAD_KEYS = ("name_or_path", "revision", "dtype", "quantization", "device", "trust_remote_code")
_loaded: dict[tuple, LoadedModel] = {}
load_count = 0  # how many times a model was actually constructed in this process (tests assert on it)


def model_path(model_cfg: Mapping) -> str:
    """The checkpoint to load: the configured hub id / dir, or the tiny model built on first use."""
    if model_cfg.get("tiny"):
        return str(ensure_tiny_model(dict(model_cfg["tiny"]), model_cfg["cache_dir"]))
    if not model_cfg.get("name_or_path"):
        raise ValueError("model.name_or_path is empty: give a hub id (e.g. allenai/OLMoE-1B-7B-0924) or a local dir")
    return str(model_cfg["name_or_path"])


def get_model(model_cfg: Mapping) -> LoadedModel:
    global load_count
    path = model_path(model_cfg)
    key = (path,) + tuple(str(model_cfg.get(k)) for k in LOAD_KEYS[1:])
    if key not in _loaded:
        _loaded.clear()  # one model at a time: free the previous one before loading the next
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        kwargs = {k: model_cfg[k] for k in LOAD_KEYS[1:] if model_cfg.get(k) is not None}
        _loaded[key] = load_model(path, **kwargs)
        load_count += 1
    return _loaded[key]


class Featurizer:
    """Callable texts → pooled features {"hs": (n, hidden), "rw": (n, layers, experts), ...} for one model × prompt."""

    def __init__(
        self,
        model_cfg: Mapping,
        template: str,
        normalize: bool = True,
        progress: bool = True,
        features=DEFAULT_FEATURES,
    ):
        self.model_cfg = dict(model_cfg)
        self.features = tuple(features)
        self.template = check_template(template)
        self.normalize = normalize
        self.progress = progress
        self.n_truncated = 0

    def __call__(self, texts: list[str], desc: str | None = None) -> dict[str, np.ndarray]:
        lm = get_model(self.model_cfg)
        max_length = int(self.model_cfg.get("max_length", 512))
        prompted = prompt_texts(texts, self.template, lm.tokenizer, max_length, self.normalize)
        if prompted.n_truncated:
            log.warning("%s: %d text(s) truncated to max_length=%d", desc or "", prompted.n_truncated, max_length)
        self.n_truncated += prompted.n_truncated
        return extract(
            lm,
            prompted.texts,
            batch_size=int(self.model_cfg.get("batch_size", 32)),
            max_length=max_length,
            padding_side=self.model_cfg.get("padding_side", "left"),
            features=self.features,
            desc=desc,
            progress=self.progress,
        )
