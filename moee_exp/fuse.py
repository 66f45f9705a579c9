"""Pooled features → one embedding per text, for each emb kind.

- hs, rw: the block itself (cosine similarity).
- moee_concat: the standardized blocks side by side.
- moee_sum: [HS/|HS|, sqrt(alpha) * RW/|RW|]. Its dot product is exactly cos(HS) + alpha*cos(RW), its cosine is that
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

import numpy as np

KINDS = ("hs", "rw", "moee_concat", "moee_sum")
STANDARDIZE = ("none", "text", "batch")
RW_ACTIVATIONS = ("logits", "softmax")


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


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


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
    """
    if kind not in KINDS:
        raise ValueError(f"emb kind {kind!r} is not one of {KINDS}")
    if not np.isfinite(alpha) or alpha < 0:  # NaN would pass `alpha < 0` and reach the evaluators
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    hs, rw = blocks(features, rw_activation=rw_activation, standardize=standardize,
                    standardize_batch_size=standardize_batch_size, hs_feature=hs_feature, rw_feature=rw_feature)
    if kind == "hs":
        out = hs
    elif kind == "rw":
        out = rw
    elif kind == "moee_concat":
        out = np.concatenate([hs, rw], axis=1)
    else:
        out = np.concatenate([l2_normalize(hs), np.sqrt(alpha) * l2_normalize(rw)], axis=1)
    return out.astype(np.float32)


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
    the public code's MoEE(sum) scores (moee_exp.paper_scoring) get as its two embeddings."""
    hs = standardize_block(features[hs_feature].astype(np.float64), standardize, standardize_batch_size)
    rw = standardize_block(rw_block(features[rw_feature], rw_activation), standardize, standardize_batch_size)
    return hs, rw
