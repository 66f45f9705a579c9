"""Embedding kinds: how the pooled HS and RW blocks of a text become its embedding.

A kind is a small declared object (``EmbKind``), registered by name. Every stage reads its facts from the registry
rather than switching on the name: the emb config's choices, the fused width, the fusion itself, the similarity a
sentence-transformers model uses, whether the similarity weights (α) apply, protocol=paper's standardization, the
label in tables and dashboards. Each module of this package is imported on first use and registers its kinds, so a
new kind is one module here (``register(EmbKind(...))``) plus one conf/emb/<name>.yaml.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BLOCKS = ("hs", "rw")


@dataclass(frozen=True)
class EmbKind:
    name: str  # emb.kind
    label: str  # in tables, figures and dashboards
    blocks: tuple[str, ...]  # the blocks the embedding is made of, side by side, in this order
    # each block scaled to norm 1 (RW: sqrt(alpha) with ``weighted``), so the dot product is a sum of cosines
    unit_blocks: bool = False
    # α weights cos(RW) in the similarity (MoEE(sum)): the weights group chooses α, and protocol.sum_scoring applies
    weighted: bool = False
    similarity: str = "cosine"  # how two embeddings compare (sentence-transformers): cosine | dot
    standardize: str = "none"  # emb.standardize where none is given (the embed CLI, sentence-transformers, tables)
    paper_standardize: str = "batch"  # protocol=paper's emb.standardize (the public code's, conf/protocol/paper.yaml)
    # another fusion than "the blocks side by side": (hs, rw, alpha) float64 blocks -> (n, dim) embedding
    combine: Callable[[np.ndarray, np.ndarray, float], np.ndarray] | None = None

    def __post_init__(self):
        if not self.blocks or set(self.blocks) - set(BLOCKS):
            raise ValueError(f"emb kind {self.name!r}: blocks={self.blocks!r} must be taken from {BLOCKS}")
        if self.similarity not in ("cosine", "dot"):
            raise ValueError(f"emb kind {self.name!r}: similarity={self.similarity!r} is not cosine or dot")

    def dim(self, hidden: int, rw: int) -> int:
        """The embedding's width, from the HS width and the RW width (MoE layers x experts)."""
        return sum({"hs": hidden, "rw": rw}[b] for b in self.blocks)

    def fuse_blocks(self, hs: np.ndarray, rw: np.ndarray, alpha: float) -> np.ndarray:
        """The embedding of some rows from their (standardized) float64 blocks."""
        if self.combine is not None:
            return self.combine(hs, rw, alpha)
        parts = {"hs": hs, "rw": rw}
        if self.unit_blocks:
            parts = {b: l2_normalize(x) * (np.sqrt(alpha) if b == "rw" and self.weighted else 1.0) for b, x in parts.items()}
        chosen = [parts[b] for b in self.blocks]
        return chosen[0] if len(chosen) == 1 else np.concatenate(chosen, axis=1)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Each row over its euclidean norm (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


_REGISTRY: dict[str, EmbKind] = {}


def register(kind: EmbKind) -> EmbKind:
    """Add (or replace) a kind under its name; returns it."""
    _REGISTRY[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


@functools.cache
def _load() -> None:
    """Import every module of this package once: each registers its kinds."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def names() -> tuple[str, ...]:
    """Every registered kind's name, in registration order."""
    _load()
    return tuple(_REGISTRY)


def get(name: str) -> EmbKind:
    """The kind called ``name``; ValueError naming the registered ones otherwise."""
    _load()
    if name not in _REGISTRY:
        raise ValueError(f"emb kind {name!r} is not one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]
