"""One forward pass per batch → HS and RW at each text's last real token.

HS is the base model's last_hidden_state (= transformers' ``hidden_states[-1]``); RW is, for every router in layer
order, the router's logits for the hidden state it received, read by a pre-forward hook at the pooled token only.
Nothing else is kept: no per-layer hidden states, no KV cache.

A text's features do not depend on its batch: positions are counted from its first real token (so left padding
shifts nothing), padding never reaches a pooled token, and texts are batched by length only to save padding. Where
padding can change a model's computation (sparse attention, ``padding_exact_up_to``), longer texts share a batch
only with texts of their own length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import NonFiniteFeatureError
from .cache import heartbeat
from .loading import LoadedModel
from .prompts import apply_prompt
from .routers import router_logits, text_config

log = logging.getLogger(__name__)

# Bump when a change to prompting, tokenization, the forward pass or pooling changes any feature value: it is part
# of the feature cache's key (moee_exp.features.cache), so features computed by older code are not reused.
EXTRACTION_VERSION = 3  # 2: a text with no tokens after prompting is embedded as one special token, not zeros
# 3: with sparse attention, a text longer than the model's index_topk is never padded (padding_exact_up_to)


def clean_text(text) -> str:
    """Any input as valid text: None becomes '', lone UTF-16 surrogates (which tokenizers reject) become U+FFFD."""
    if text is None:
        return ""
    text = str(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text



def clean_texts(texts) -> list[str]:
    """``[clean_text(t) for t in texts]``; when all are str, one encode of them all checks them (a job cleans ~10^5)."""
    texts = list(texts)
    if all(type(t) is str for t in texts):
        try:
            "".join(texts).encode("utf-8")  # a lone surrogate fails here, as in clean_text (no pair forms across texts)
            return texts
        except UnicodeEncodeError:
            pass
    return [clean_text(t) for t in texts]


@dataclass
class Prompted:
    texts: list[str]
    n_truncated: int
    truncated: list[bool] = field(default_factory=list)  # per text: was it cut to fit max_length


def prompt_texts(texts, template: str, tokenizer, max_length: int, normalize: bool = True, instruction: str = "",
                 mode: str = "clean") -> Prompted:  # fmt: skip
    """Put each text into the template (after ``instruction``); a text too long for max_length is cut (its end,
    never the prompt's). ``mode="paper"`` (the public code) never cuts: max_length is not applied."""
    out, n_truncated, truncated = [], 0, []
    for text in texts:
        text = clean_text(text)
        prompted = apply_prompt(text, template, normalize, instruction, mode)
        if mode == "paper":
            out.append(prompted)
            truncated.append(False)
            continue
        n_tokens = len(tokenizer(prompted)["input_ids"])
        truncated.append(n_tokens > max_length)
        if n_tokens > max_length:
            n_truncated += 1
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            keep = max(len(ids) - (n_tokens - max_length) - 2, 0)  # 2 tokens slack for merges at the cut
            prompted = apply_prompt(tokenizer.decode(ids[:keep]), template, normalize, instruction, mode)
        out.append(prompted)
    return Prompted(out, n_truncated, truncated)


def pooled_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, for left or right padding."""
    steps = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask * steps).argmax(dim=1)


# Pooled features one forward pass can give; the ablation (paper Table 5) needs the non-default ones.
FEATURES = {
    "hs": "last hidden state (hidden_states[-1]) at the last real token",
    "hs_mean_tokens": "last hidden state averaged over real tokens",
    "hs_mean_layers": "hidden_states[0..L] (embeddings and every layer) averaged, at the last real token",
    "hs_mean_tokens_layers": "hidden_states[0..L] averaged over layers and real tokens",
    "rw": "router logits of every MoE layer at the last real token",
    "rw_mean_tokens": "router logits of every MoE layer averaged over real tokens",
}
DEFAULT_FEATURES = ("hs", "rw")


class _Pool:
    """Last-token and masked-mean pooling of (B, T, D) or (B*T, D) activations for one padded batch."""

    def __init__(self, attention_mask: torch.Tensor):
        self.batch, self.length = attention_mask.shape
        rows = torch.arange(self.batch, device=attention_mask.device)
        self.flat_last = rows * self.length + pooled_positions(attention_mask)
        mask = attention_mask.float()
        self.weights = mask / mask.sum(dim=1, keepdim=True)

    def last(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, x.shape[-1])[self.flat_last.to(x.device)].float()

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(self.batch, self.length, -1).float()
        return (x * self.weights.to(x.device)[..., None]).sum(dim=1)


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of decoder layers: the first ModuleList as long as config.num_hidden_layers."""

    n = text_config(model.config).num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise RuntimeError(f"{type(model).__name__}: no list of {n} decoder layers found")


class _Taps:
    """Hooks that pool what the requested features need while the forward pass runs, and keep nothing else."""

    def __init__(self, lm: LoadedModel, pool: _Pool, wanted: set[str]):
        self.pool, self.wanted = pool, wanted
        self.rw: dict[str, list] = {k: [None] * len(lm.routers) for k in ("rw", "rw_mean_tokens") if k in wanted}
        self.layer_sums: dict[str, torch.Tensor] = {}
        self.handles = []
        if self.rw:
            for i, router in enumerate(lm.routers):
                hook = self._router_hook(i, router)
                self.handles.append(router.module.register_forward_pre_hook(hook, with_kwargs=True))
        if wanted & {"hs_mean_layers", "hs_mean_tokens_layers"}:
            layers = decoder_layers(lm.model)
            # hidden_states[0] is the first layer's input; hidden_states[i] the output of layer i-1, except the
            # last, which is the normed last_hidden_state (added in forward_features).
            self.handles.append(layers[0].register_forward_pre_hook(self._input_hook, with_kwargs=True))
            for layer in list(layers)[:-1]:
                self.handles.append(layer.register_forward_hook(self._output_hook, with_kwargs=True))

    def _router_hook(self, i, router):
        def hook(module, args, kwargs):
            flat = args[0] if args else next(iter(kwargs.values()))
            flat = flat.reshape(-1, flat.shape[-1])
            if "rw" in self.rw:
                self.rw["rw"][i] = router_logits(router, self.pool.last(flat))
            if "rw_mean_tokens" in self.rw:
                self.rw["rw_mean_tokens"][i] = self.pool.mean(router_logits(router, flat))

        return hook

    def _input_hook(self, module, args, kwargs):
        self.add_layer(args[0] if args else kwargs["hidden_states"])

    def _output_hook(self, module, args, kwargs, output):
        self.add_layer(output[0] if isinstance(output, (tuple, list)) else output)

    def add_layer(self, hidden: torch.Tensor) -> None:
        for name, pool in (("hs_mean_layers", self.pool.last), ("hs_mean_tokens_layers", self.pool.mean)):
            if name in self.wanted:
                self.layer_sums[name] = self.layer_sums.get(name, 0) + pool(hidden)

    def remove(self):
        for h in self.handles:
            h.remove()


@torch.inference_mode()
def forward_features(
    lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, features=DEFAULT_FEATURES
) -> dict[str, torch.Tensor]:
    """Pooled float32 features for one padded batch: HS-like (B, hidden), RW-like (B, n_moe_layers, n_experts)."""
    wanted = set(features)
    if wanted - FEATURES.keys():
        raise ValueError(f"unknown features {sorted(wanted - FEATURES.keys())}; known: {list(FEATURES)}")
    input_ids, attention_mask = input_ids.to(lm.device), attention_mask.to(lm.device)
    # Positions count from each text's first real token, so left padding changes nothing.
    position_ids = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
    pool = _Pool(attention_mask)
    taps = _Taps(lm, pool, wanted)
    try:
        out = lm.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    finally:
        taps.remove()
    last = out.last_hidden_state
    result = {}
    if "hs" in wanted:
        result["hs"] = pool.last(last)
    if "hs_mean_tokens" in wanted:
        result["hs_mean_tokens"] = pool.mean(last)
    if taps.layer_sums:
        taps.add_layer(last)
        n_states = len(decoder_layers(lm.model)) + 1
        result.update({k: v / n_states for k, v in taps.layer_sums.items()})
    for name, per_router in taps.rw.items():
        missing = [r.name for r, lg in zip(lm.routers, per_router) if lg is None]
        if missing:
            raise RuntimeError(f"routers {missing} were not called in the forward pass")
        result[name] = torch.stack(per_router, dim=1)
    return {k: v.cpu() for k, v in result.items()}


def length_batches(lengths: list[int], batch_size: int, max_padding: float = 0.1,
                   exact_above: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory trouble shows up at once).

    A batch also ends where the next text is more than ``max_padding`` shorter than the batch's longest, so no
    batch pads more than 1/(1 - max_padding) of its real tokens (1.11x), even for a long-tailed mix of lengths;
    that costs at most ~22 extra batches per tenfold spread of lengths. A batch longer than ``exact_above`` tokens
    holds texts of one length only: no padding.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        longest = lengths[batches[-1][0]] if batches else 0
        if (not batches or len(batches[-1]) == batch_size or lengths[i] < (1 - max_padding) * longest
                or (exact_above is not None and longest > exact_above and lengths[i] != longest)):
            batches.append([])
        batches[-1].append(i)
    return batches


def padding_exact_up_to(lm: LoadedModel) -> int | None:
    """The longest padded batch whose padding cannot change a text's features; None: any length.

    Sparse attention (DeepSeek-V3.2-style indexers, config ``index_topk``) lets each query attend only its top-k
    keys. Over k keys, torch's top-k breaks ties among equal index scores (exact zeros after the indexer's ReLU) by
    position, so the keys a text attends depend on its padding: measured on a tiny dots3_note (k = 16), texts over k
    tokens had HS off by up to 1.4 in the default batches. Up to k tokens every key is attended: padding is exact.
    """
    k = getattr(text_config(lm.model.config), "index_topk", None)
    return k if isinstance(k, int) and k > 0 else None


def extract(
    lm: LoadedModel,
    texts: list[str],
    *,
    batch_size: int = 32,
    max_length: int = 512,
    padding_side: str = "left",
    features=DEFAULT_FEATURES,
    desc: str | None = None,
    progress: bool = True,
    truncate: bool = True,
    max_padding: float = 0.1,
) -> dict[str, np.ndarray]:
    """Features of already-prompted texts, in input order: {"hs": (n, hidden), "rw": (n, layers, experts), ...}.
    ``truncate=False`` (the public code) feeds every text whole, whatever max_length says. Texts are batched by
    length (``length_batches``); ``max_padding=1`` batches them in length order whatever their lengths, so a
    batch of a long and a one-token text is mostly padding (the reference checks use it to exercise padding), except
    where padding would change the model's computation (``padding_exact_up_to``)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not len(texts):  # no text (a task's sample of none): no forward pass, each feature with zero rows
        return {name: np.zeros((0, lm.hidden_size) if name.startswith("hs") else (0, len(lm.routers), lm.n_experts),
                               np.float32) for name in features}
    tok = lm.tokenizer
    limit = {"truncation": True, "max_length": max_length} if truncate else {}
    encoded = [list(ids) for ids in tok(list(texts), **limit)["input_ids"]]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:  # nothing to pool (an empty text with a bare '{text}' template and prompt.normalize=false)
        filler = next(t for t in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, 0) if t is not None)
        for i in empty:
            encoded[i] = [filler]
        log.warning("%s: %d text(s) have no tokens after prompting; each is embedded as the single token %r",
                    desc or "extract", len(empty), tok.convert_ids_to_tokens(filler))
    feats: dict[str, np.ndarray] = {}
    batches = length_batches([len(e) for e in encoded], batch_size, max_padding, padding_exact_up_to(lm))
    # a transient bar, on a terminal only (disable=None), for long extractions: the job's own bar counts datasets
    quiet = not progress or len(batches) < 20
    for idx in tqdm(batches, desc=desc or "extract", unit="batch", leave=False, disable=True if quiet else None):
        tok.padding_side = padding_side
        padded = tok.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
        out = forward_features(lm, padded["input_ids"], padded["attention_mask"], features)
        for name, value in out.items():
            feats.setdefault(name, np.zeros((len(texts), *value.shape[1:]), np.float32))[idx] = value.numpy()
        heartbeat()  # a batch done: keeps a held extraction lock fresh (a stuck holder's goes stale)
    check_finite(feats, desc, texts)
    return feats


def check_finite(feats: dict[str, np.ndarray], desc: str | None = None, texts=None) -> None:
    """Fail loudly on NaN/inf or an all-zero vector, naming the texts (the public code silently replaced NaN by 0)."""
    for name, value in feats.items():
        flat = value.reshape(len(value), -1)
        for problem, bad in (
            ("NaN/inf", np.flatnonzero(~np.isfinite(flat).all(axis=1))),
            ("an all-zero vector", np.flatnonzero(~flat.any(axis=1))),
        ):
            if bad.size:
                sample = str(texts[bad[0]]) if texts is not None else ""
                raise NonFiniteFeatureError(name, bad.tolist(), desc, problem, sample)
