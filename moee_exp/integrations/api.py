"""The Python API for one's own texts: a loaded model + texts → pooled features (then ``fuse`` for embeddings).

``load_model`` takes what ``python run.py model=...`` and ``moee-embed --model`` take: a conf/model option (``tiny``,
``olmoe``, ``qwen_moe``, ...), a hub id or a local dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import yaml

from ..features import loading
from ..features.extract import DEFAULT_FEATURES, extract, prompt_texts
from ..features.loading import LoadedModel, ModelConfig
from ..features.prompts import PromptConfig
from ..features.tiny import ensure_tiny_model

CONF_MODELS = Path(__file__).resolve().parents[2] / "conf" / "model"
DEFAULT_CACHE = "~/.cache/moee_exp"  # tiny models are built here (MOEE_CACHE_DIR overrides), as run.py's paths.cache_dir


def resolve_model(name: str, cache_dir: str | None = None) -> tuple[str, bool]:
    """A conf/model/<name>.yaml option (e.g. tiny, olmoe) → (its hub id, or the tiny model's dir built on first use,
    and its trust_remote_code); an existing local path or a hub id ("org/name") is returned as given."""

    conf = CONF_MODELS / f"{name}.yaml"
    if "/" in name or os.sep in name or Path(name).expanduser().exists() or not conf.exists():
        return name, False
    spec = yaml.safe_load(conf.read_text())
    if spec.get("tiny"):
        cache = cache_dir or os.environ.get("MOEE_CACHE_DIR") or DEFAULT_CACHE
        return str(ensure_tiny_model(spec["tiny"], cache)), False
    return spec["name_or_path"], bool(spec.get("trust_remote_code", False))


def load_model(name_or_path: str, *, cache_dir: str | None = None, trust_remote_code: bool = False,
               **kwargs) -> LoadedModel:
    """``moee_exp.features.loading.load_model`` that also takes a conf/model option name (``tiny``, ``olmoe``, ...);
    ``cache_dir``: where a tiny model is built (default ``$MOEE_CACHE_DIR`` or ~/.cache/moee_exp)."""
    path, trust = resolve_model(str(name_or_path), cache_dir)
    return loading.load_model(path, trust_remote_code=trust_remote_code or trust, **kwargs)


def embed_texts(
    lm: LoadedModel,
    texts: list[str],
    prompt: str = PromptConfig.name,
    *,
    template: str | None = None,
    normalize: bool = PromptConfig.normalize,
    max_length: int = ModelConfig.max_length,
    batch_size: int = ModelConfig.batch_size,
    padding_side: str = ModelConfig.padding_side,
    features=DEFAULT_FEATURES,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Pooled features of ``texts`` in input order: {"hs": (n, hidden), "rw": (n, moe_layers, experts)}.

    ``prompt`` names one of the paper's templates (moee_exp.features.prompts.TEMPLATES); ``template`` gives your own.
    The keywords are a spec's fields (moee_exp.scoring.spec), with its defaults.
    """
    template = PromptConfig(prompt, template, normalize).text_template  # checked: a known prompt, one {text}
    prompted = prompt_texts(texts, template, lm.tokenizer, max_length, normalize)
    return extract(
        lm,
        prompted.texts,
        batch_size=batch_size,
        max_length=max_length,
        padding_side=padding_side,
        features=features,
        progress=progress,
    )
