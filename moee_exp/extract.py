"""One forward pass per batch → HS and RW at each text's last real token.

HS is the base model's last_hidden_state (= transformers' ``hidden_states[-1]``); RW is, for every router in layer
order, the router's logits for the hidden state it received, read by a pre-forward hook at the pooled token only.
Nothing else is kept: no per-layer hidden states, no KV cache.

A text's features do not depend on its batch: positions are counted from its first real token (so left padding
shifts nothing), padding never reaches a pooled token, and texts are batched by length only to save padding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .loading import LoadedModel
from .prompts import apply_prompt
from .routers import router_logits

log = logging.getLogger(__name__)


class NonFiniteFeatureError(ValueError):
    pass


@dataclass
class Prompted:
    texts: list[str]
    n_truncated: int


def prompt_texts(texts, template: str, tokenizer, max_length: int, normalize: bool = True) -> Prompted:
    """Put each text into the template; a text too long for max_length is cut (its end, never the prompt's)."""
    out, n_truncated = [], 0
    for text in texts:
        prompted = apply_prompt(text, template, normalize)
        n_tokens = len(tokenizer(prompted)["input_ids"])
        if n_tokens > max_length:
            n_truncated += 1
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            keep = max(len(ids) - (n_tokens - max_length) - 2, 0)  # 2 tokens slack for merges at the cut
            prompted = apply_prompt(tokenizer.decode(ids[:keep]), template, normalize)
        out.append(prompted)
    return Prompted(out, n_truncated)


def pooled_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, for left or right padding."""
    steps = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask * steps).argmax(dim=1)


class _RouterTap:
    """Pre-forward hooks that turn each router's input at the pooled tokens into router logits."""

    def __init__(self, routers):
        self.routers = routers
        self.flat_index: torch.Tensor | None = None
        self.logits: list[torch.Tensor | None] = [None] * len(routers)
        self.handles = [
            r.module.register_forward_pre_hook(self._hook(i), with_kwargs=True) for i, r in enumerate(routers)
        ]

    def _hook(self, i):
        router = self.routers[i]

        def hook(module, args, kwargs):
            hidden = args[0] if args else next(iter(kwargs.values()))
            flat = hidden.reshape(-1, hidden.shape[-1])
            self.logits[i] = router_logits(router, flat[self.flat_index.to(flat.device)])

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


@torch.inference_mode()
def forward_features(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """HS (B, hidden) and RW (B, n_layers, n_experts), float32, for one padded batch."""
    input_ids, attention_mask = input_ids.to(lm.device), attention_mask.to(lm.device)
    batch, length = input_ids.shape
    pos = pooled_positions(attention_mask)
    position_ids = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
    tap = _RouterTap(lm.routers)
    tap.flat_index = torch.arange(batch, device=lm.device) * length + pos
    try:
        out = lm.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    finally:
        tap.remove()
    missing = [r.name for r, lg in zip(lm.routers, tap.logits) if lg is None]
    if missing:
        raise RuntimeError(f"routers {missing} were not called in the forward pass")
    hs = out.last_hidden_state[torch.arange(batch, device=lm.device), pos].float()
    return {"hs": hs.cpu(), "rw": torch.stack(tap.logits, dim=1).cpu()}


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory trouble shows up at once)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def extract(
    lm: LoadedModel,
    texts: list[str],
    *,
    batch_size: int = 32,
    max_length: int = 512,
    padding_side: str = "left",
    desc: str | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Features of already-prompted texts, in input order: {"hs": (n, hidden), "rw": (n, layers, experts)}."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    tok = lm.tokenizer
    encoded = tok(list(texts), truncation=True, max_length=max_length)["input_ids"]
    n = len(texts)
    feats = {
        "hs": np.zeros((n, lm.hidden_size), np.float32),
        "rw": np.zeros((n, len(lm.routers), lm.n_experts), np.float32),
    }
    batches = length_batches([len(e) for e in encoded], batch_size)
    for idx in tqdm(batches, desc=desc or "extract", unit="batch", disable=not progress or not batches):
        tok.padding_side = padding_side
        padded = tok.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
        out = forward_features(lm, padded["input_ids"], padded["attention_mask"])
        for name, value in out.items():
            feats[name][idx] = value.numpy()
    check_finite(feats)
    return feats


def check_finite(feats: dict[str, np.ndarray]) -> None:
    """Fail loudly on NaN/inf (the public code silently replaced NaN by 0)."""
    for name, value in feats.items():
        bad = np.flatnonzero(~np.isfinite(value.reshape(len(value), -1)).all(axis=1))
        if bad.size:
            raise NonFiniteFeatureError(
                f"{name} has NaN/inf for {bad.size} text(s), first indices {bad[:10].tolist()}; "
                "try model.dtype=float32 or a shorter model.max_length"
            )
