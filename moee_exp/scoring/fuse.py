"""Pooled features → one embedding per text, for each emb kind (moee_exp.scoring.kinds: the blocks it is made of).

- hs, rw: the block itself (cosine similarity).
- moee_concat: the standardized blocks side by side.
- moee_sum (unit blocks, α-weighted): [HS/|HS|, sqrt(alpha) * RW/|RW|]. Its dot product is exactly cos(HS) + alpha*cos(RW), its cosine is that
  divided by (1 + alpha) and its squared euclidean distance is 2(1+alpha) - 2(cos(HS) + alpha*cos(RW)), so every
  stock mteb evaluator (STS, pair classification, reranking, summarization, logistic regression, k-means) sees the
  summed similarity of the paper, not a sum of two metrics or an average of two predicted labels.

Standardization of each block (``standardize``):
- none: raw block.
- text (default for moee_concat): z-score each vector over its own features, so an embedding is a function of
  its text alone.
- batch: z-score each feature over consecutive batches of ``batch_size`` texts of the list being encoded, exactly
  as the public code does (moee.py: torch's unbiased std, ``(x - mean) / (std + 1e-8)``, and NaN, e.g. from a
  batch of one text, set to 0; batch 128). A text's embedding then depends on its batch-mates; the default of
  ``protocol=paper`` for every emb kind but hs, to reproduce the paper's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np

from ..checks import Checked, choice
from ..errors import ConfigError
from ..features.extract import FEATURES
from ..features.loading import RW_ACTIVATIONS
from . import kinds
from .kinds import l2_normalize  # noqa: F401 (the weights stage and benchmarks take it from here)

STANDARDIZE = ("none", "text", "batch")


@dataclass
class EmbConfig(Checked):
    """One embedding of the pooled features (the emb group, conf/emb/): its kind (moee_exp.scoring.kinds) and how
    its blocks are made. MoEE(sum)'s α is not here: the similarity weights group chooses it (conf/weights/)."""

    group = "emb"

    kind: str = field(default="moee_sum", metadata=choice(kinds.names))
    alpha: float | None = None  # set: an error naming weights.alpha, where α is set (commands written for emb.alpha)
    # logits (public code's OLMoE/Qwen numbers) | softmax (the paper's text)
    rw_activation: str = field(default="logits", metadata=choice(RW_ACTIVATIONS))
    # none | text | batch (public code, batch-dependent)
    standardize: str = field(default="none", metadata=choice(STANDARDIZE))
    standardize_batch_size: int = field(default=128, metadata={"min": 1})
    # pooling of the HS block: hs | hs_mean_tokens | hs_mean_layers | hs_mean_tokens_layers
    hs_feature: str = field(default="hs", metadata=choice(tuple(f for f in FEATURES if f.startswith("hs"))))
    # pooling of the RW block: rw | rw_mean_tokens
    rw_feature: str = field(default="rw", metadata=choice(tuple(f for f in FEATURES if f.startswith("rw"))))

    def check(self) -> None:
        if self.alpha is not None:
            raise ConfigError(f"emb.alpha is now weights.alpha (the similarity weights group): use weights.alpha={self.alpha}")

    def fuse_kwargs(self, alpha: float = 1.0) -> dict:
        """fuse()'s keywords for this config and α."""
        return {"alpha": alpha, "rw_activation": self.rw_activation, "standardize": self.standardize,
                "standardize_batch_size": self.standardize_batch_size, "hs_feature": self.hs_feature,
                "rw_feature": self.rw_feature}


def rw_block(rw: np.ndarray, activation: str = "logits") -> np.ndarray:
    """(n, layers, experts) router logits → (n, layers*experts); softmax is taken over each layer's experts."""
    if activation not in RW_ACTIVATIONS:
        raise ValueError(f"rw_activation={activation!r} is not one of {RW_ACTIVATIONS}")
    rw = rw.astype(np.float64)
    if activation == "softmax":
        rw = np.exp(rw - rw.max(axis=-1, keepdims=True))
        rw /= rw.sum(axis=-1, keepdims=True)
    return rw.reshape(len(rw), -1)


def _zscore(x: np.ndarray, axis: int) -> np.ndarray:
    std = x.std(axis=axis, keepdims=True)
    return (x - x.mean(axis=axis, keepdims=True)) / np.where(std > 0, std, 1.0)


def _zscore_public(x: np.ndarray) -> np.ndarray:
    """The public code's per-feature z-score of one batch: unbiased std + 1e-8; its NaN (one text) becomes 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        std = x.std(axis=0, ddof=1, keepdims=True) if len(x) > 1 else np.full((1, x.shape[1]), np.nan)
        out = (x - x.mean(axis=0, keepdims=True)) / (std + 1e-8)
    return np.nan_to_num(out, nan=0.0)


def standardize_block(x: np.ndarray, mode: str, batch_size: int = 128) -> np.ndarray:
    if mode == "none":
        return x
    if mode == "text":
        return _zscore(x, axis=1)
    if mode == "batch":
        if not len(x):
            return x
        return np.concatenate([_zscore_public(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    raise ValueError(f"standardize={mode!r} is not one of {STANDARDIZE}")


ROWS = 2048  # rows fused per step: a step's temporaries stay in the CPU's cache and the output is written once


def fuse(
    features: dict[str, np.ndarray],
    kind: str,
    *,
    alpha: float = 1.0,
    rw_activation: str = "logits",
    standardize: str = "none",
    standardize_batch_size: int = 128,
    hs_feature: str = "hs",
    rw_feature: str = "rw",
) -> np.ndarray:
    """Embeddings (n, d) float32 of kind ``kind`` from pooled features (keyword names are the emb config's) {"hs": (n, hidden), "rw": (n, layers, experts)}.

    ``hs_feature`` / ``rw_feature`` pick another pooling for the blocks (e.g. "hs_mean_tokens", see extract.FEATURES).
    Rows are fused ROWS at a time (a multiple of ``standardize_batch_size`` for standardize=batch, so batches are
    the same), which gives each row exactly what fusing all rows at once gives.
    """
    k = _check(kind, alpha, rw_activation, standardize)
    hs, rw3 = features[hs_feature], features[rw_feature]
    n = len(hs)
    rw = rw3.reshape(n, int(np.prod(rw3.shape[1:])))  # layers*experts (softmax, below, needs rw3's layers)
    plain = standardize == "none" and rw_activation == "logits" and k.combine is None
    if plain and len(k.blocks) == 1 and not k.unit_blocks:  # the block itself, as float32
        return np.array(hs if k.blocks == ("hs",) else rw, dtype=np.float32)
    out = np.empty((n, k.dim(hs.shape[1], rw.shape[1])), np.float32)
    step = ROWS if standardize != "batch" else max(1, ROWS // standardize_batch_size) * standardize_batch_size
    unit_pair = _unit_pair(k, rw_activation, standardize)
    for i in range(0, n, step):
        rows = slice(i, i + step)
        if unit_pair:  # unit blocks straight from float32 (within ~1 ulp of the float64 path)
            out[rows, : hs.shape[1]] = unit_rows(hs[rows])
            out[rows, hs.shape[1] :] = unit_rows(rw[rows], _rw_scale(k, alpha))
            continue
        out[rows] = _fuse_f64(hs[rows], rw3[rows], k, alpha, rw_activation, standardize, standardize_batch_size)
    return out


def _unit_pair(k: kinds.EmbKind, rw_activation: str, standardize: str) -> bool:
    """HS and RW side by side, each scaled to norm 1, nothing else: fused block by block from the float32 features
    (fuse's fast path, and SumSink while the cache is read)."""
    return (k.unit_blocks and k.blocks == ("hs", "rw") and k.combine is None and standardize == "none"
            and rw_activation == "logits")


def _rw_scale(k: kinds.EmbKind, alpha: float) -> float:
    return float(np.sqrt(alpha)) if k.weighted else 1.0


def _check(kind: str, alpha: float, rw_activation: str, standardize: str) -> kinds.EmbKind:
    k = kinds.get(kind)
    if not np.isfinite(alpha) or alpha < 0:  # NaN would pass `alpha < 0` and reach the evaluators
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    if standardize not in STANDARDIZE:
        raise ValueError(f"standardize={standardize!r} is not one of {STANDARDIZE}")
    if rw_activation not in RW_ACTIVATIONS:
        raise ValueError(f"rw_activation={rw_activation!r} is not one of {RW_ACTIVATIONS}")
    return k


def unit_rows(x: np.ndarray, scale: float = 1.0, inplace: bool = False) -> np.ndarray:
    """scale * x / |x| for each row (of any shape; zero rows stay zero), float32 in and out (the squared norm in
    float64 where float32 cannot hold it). Within ~1 float32 ulp of the float64 fusion: no main score moved (BENCHMARKS).
    ``inplace``: written over ``x`` when it is float32 (a block the caller owns: no new array per block)."""
    flat = x.reshape(len(x), -1).astype(np.float32, copy=False)
    with np.errstate(over="ignore"):  # an overflow is caught below
        sq = np.vecdot(flat, flat)  # (a dot per row: twice einsum's speed)
    if not np.isfinite(sq).all():
        sq = np.einsum("ij,ij->i", flat, flat, dtype=np.float64)
    norm = np.sqrt(sq, dtype=np.float64)
    factor = (scale / np.where(norm > 0, norm, 1.0)).astype(np.float32)[:, None]
    if inplace and np.may_share_memory(flat, x):  # (flat is x, not a float32 copy of it)
        return np.multiply(flat, factor, out=flat).reshape(x.shape)
    return (flat * factor).reshape(x.shape)


class SumSink:
    """A unit-block kind (MoEE(sum)) with standardize=none and RW logits, fused into the feature cache's read: HS and
    RW are read straight into the embedding's two blocks, each block of rows scaled to norm 1 (RW: ``rw_scale``,
    sqrt(alpha) for MoEE(sum)) on its way, so the features are read once and the embedding written once
    (``Featurizer(..., sink=)``); ``emb`` equals ``fuse``'s output."""

    def __init__(self, rw_scale: float = 1.0, hs_feature: str = "hs", rw_feature: str = "rw"):
        self.rw_scale, self.hs, self.rw, self.emb = rw_scale, hs_feature, rw_feature, None

    def __call__(self, n: int, shapes: dict) -> dict:
        """Where features of n texts with value shapes ``shapes`` go: {feature: (out array, rows_fn)}."""
        h, r = (int(np.prod(shapes[f])) for f in (self.hs, self.rw))
        self.emb = np.empty((n, h + r), np.float32)
        return {
            self.hs: (self.emb[:, :h].reshape(n, *shapes[self.hs]), partial(unit_rows, inplace=True)),
            self.rw: (self.emb[:, h:].reshape(n, *shapes[self.rw]),
                      partial(unit_rows, scale=self.rw_scale, inplace=True)),
        }


def sink_for(kind: str, *, alpha: float = 1.0, rw_activation: str = "logits", standardize: str = "none",
             hs_feature: str = "hs", rw_feature: str = "rw", **_) -> SumSink | None:
    """A SumSink where the fusion is one (unit HS and RW blocks, plain), else None (read, then ``fuse``)."""
    k = _check(kind, alpha, rw_activation, standardize)
    return SumSink(_rw_scale(k, alpha), hs_feature, rw_feature) if _unit_pair(k, rw_activation, standardize) else None


def _fuse_f64(hs, rw, k: kinds.EmbKind, alpha, rw_activation, standardize, batch_size) -> np.ndarray:
    """The fusion of some rows in float64 (any kind and standardization)."""
    hs = standardize_block(hs.astype(np.float64), standardize, batch_size)
    rw = standardize_block(rw_block(rw, rw_activation), standardize, batch_size)
    return k.fuse_blocks(hs, rw, alpha)


def blocks(
    features: dict[str, np.ndarray],
    *,
    rw_activation: str = "logits",
    standardize: str = "none",
    standardize_batch_size: int = 128,
    hs_feature: str = "hs",
    rw_feature: str = "rw",
    **_,
) -> tuple[np.ndarray, np.ndarray]:
    """The HS and RW blocks (float64), each standardized as ``standardize`` says: what fuse() combines, and what
    the public code's MoEE(sum) scores (moee_exp.scoring.paper_scoring) get as its two embeddings."""
    hs = standardize_block(features[hs_feature].astype(np.float64), standardize, standardize_batch_size)
    rw = standardize_block(rw_block(features[rw_feature], rw_activation), standardize, standardize_batch_size)
    return hs, rw
