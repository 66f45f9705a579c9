"""Which MoE families of the installed transformers MoEE works on, checked, not claimed.

For every model type whose config names an expert count (a config attribute, not a list of model names), a tiny
model is built from the family's own config class (shrunk to ~64 hidden units, fixed seed, offline), saved, and
loaded by ``moee_exp.features.loading`` exactly like a hub checkpoint. Our HS and RW are then compared, to 1e-5,
with what the model as built (in memory, not reloaded) reports for each text alone (no padding): ``hidden_states[-1]``
and ``router_logits`` (``output_router_logits``), or, where a family does not record router logits, the router modules'
own outputs (forward hooks). Our extraction is checked for each text alone and for all texts in one batch, left
and right padded (the short texts mostly padding).

``python scripts/moe_coverage.py`` prints the table docs/coverage.md holds; tests/test_coverage.py regenerates each
row and fails where docs/coverage.md disagrees, so a transformers upgrade shows what changed.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from moee_exp.errors import NotAMoEModelError, UnsupportedRouterError
from moee_exp.features.extract import decoder_layers, extract, padding_exact_up_to
from moee_exp.features.loading import load_model
from moee_exp.features.router_check import is_probabilities
from moee_exp.features.routers import EXPERT_COUNT_ATTRS, find_routers, text_config
from moee_exp.features.tiny import _train_tokenizer

TOL = 1e-5
SEED = 0
N_LAYERS = 4
N_EXPERTS = 6  # not a power of two: no tiny projection (64, 32, 16, 8, 4, 2 wide) is mistaken for a router
TEXTS = [
    "A man is playing a guitar on the stage tonight.",
    "hi",
    "The committee postponed the vote until the budget figures were checked again by two independent auditors.",
    "Bread rises because yeast releases gas.",
    "x",
    "Stars are far away.",
    "Odd input: ¿qué? 你好 🙂",
]
# Config values that make any family tiny, applied only where the family's config has the attribute (also inside
# sub-configs such as text_config). Names are transformers' config attribute names, shared across families.
SMALL = {
    "hidden_size": 64, "d_model": 64, "intermediate_size": 64, "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32, "moe_shared_expert_intermediate_size": 32, "expert_ffn_hidden_size": 32,
    "ffn_hidden_size": 64, "share_expert_dim": 32, "num_attention_heads": 4, "n_heads": 4, "num_key_value_heads": 2,
    "kv_n_heads": 2, "head_dim": 16, "vocab_size": 512, "max_position_embeddings": 512, "initializer_range": 0.1,
    "num_experts_per_tok": 2, "num_experts_per_token": 2, "top_k_experts": 2, "moe_top_k": 2, "moe_k": 2,
    "n_group": 2, "num_expert_group": 2, "topk_group": 1, "first_k_dense_replace": 1, "decoder_sparse_step": 1,
    "moe_layer_freq": 1, "mlp_only_layers": [], "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8, "v_head_dim": 16, "zero_expert_num": 0, "sliding_window": 64, "num_shared_experts": 1,
    "n_shared_experts": 1, "moe_num_shared_experts": 1, "router_aux_loss_coef": 0.0, "moe_topk": 2,
    "hidden_size_per_layer_input": 16,
    # hybrids' linear-attention, Mamba and sliding-window layers: the CPU fallbacks of their chunked kernels are slow
    # at the defaults (e.g. 32 x 128 linear heads, 128 Mamba heads x 128 state). Value heads a multiple of key heads
    # (4 and 8: with 2 and 4, qwen3_next's padded HS was off by 1.4e-5, float32 rounding; docs/coverage.md), Mamba
    # groups dividing its heads.
    "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_num_key_heads": 4, "linear_num_value_heads": 8,
    "linear_head_dim": 16, "linear_num_heads": 4, "mamba_num_heads": 4, "mamba_head_dim": 16, "ssm_state_size": 16,
    "n_groups": 2, "chunk_size": 16, "swa_num_attention_heads": 4, "swa_num_key_value_heads": 2, "swa_head_dim": 16,
    # multimodal towers: their width where it meets the text tower, and their heads
    "text_hidden_size": 64, "out_hidden_size": 64, "audio_hidden_size": 64, "output_dim": 64,
    "projection_hidden_dim": 64, "projector_hidden_size": 64, "encoder_attention_heads": 4, "encoder_ffn_dim": 64,
    "decoder_attention_heads": 4, "decoder_ffn_dim": 64, "vision_output_dim": 64, "projector_input_dim": 64,
    "projector_output_dim": 64,
}
# Unset (None) by default in families whose MoE is optional (Gemma 4) or set per checkpoint (DeepSeek-V2, dots1).
NULLABLE = {"num_experts_per_tok", "top_k_experts", "moe_intermediate_size", "n_shared_experts", "head_dim",
            "first_k_dense_replace"}
# What the generic shrinking cannot guess, per family: its values replace the config's wherever the key occurs
# (top level or sub-config). One line of why each.
FAMILY: dict[str, dict] = {
    "gemma4": {"enable_moe_block": True},  # MoE is optional in Gemma 4 (off by default)
    "dbrx": {"attn_config": {"rope_theta": 500000.0, "clip_qkv": 8.0}},  # its attention reads both, unset by default
    "lfm2_moe": {"layer_types": ["conv", "full_attention", "conv", "full_attention"],  # unset by default
                 "num_dense_layers": 1},
    "deepseek_ocr2": {"mlp_layer_types": ["dense", "sparse", "sparse", "sparse"]},  # unset by default
    "step3p7": {"sliding_window": 64},  # its layer types use sliding attention, but the window is unset
    "granitemoehybrid": {"mamba_n_heads": 4, "mamba_d_head": 32, "mamba_d_state": 16, "mamba_chunk_size": 16,
                         "shared_intermediate_size": 32},  # Mamba heads x head dim = 2 x hidden
    "mistral4": {"head_dim": 16},  # its head_dim is qk_nope + qk_rope (the rotary fraction is of that)
    # as many KV heads as query heads; NoPE DSA layers
    "glm5_next": {"num_key_value_heads": 4, "index_head_dim": 16, "index_n_heads": 4, "index_topk": 16,
                  "qk_rope_head_dim": 0, "qk_nope_head_dim": 16, "head_dim": 16},
    "glm4v_moe": {"rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1]}},  # sums to rotary dim/2
    "hy_v4_vl": {"rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1]}},  # sums to qk_rope/2
    # its forward reads these ids, absent from its default config; out of our vocabulary, so never matched
    "qwen3_omni_moe_thinker": {"vision_start_token_id": 10**6, "audio_start_token_id": 10**6 + 1},
    "nemo_speechlm": {"blank_token_id": 511},  # the ASR head's blank class must lie in the (tiny) vocabulary
    # its sliding-window layers' head_dim must be qk_nope + qk_rope; the vision adapter meets the text width
    "dots3_note": {"head_dim": 16, "index_head_dim": 16, "index_n_heads": 4, "index_topk": 16,
                   "shared_experts_intermediate_size": 32, "adapter_in_dim": 64, "adapter_input_size": 64,
                   "adapter_out_dim": 64},
    # its sparse-attention indexer is unset by default
    "qwen4_exp": {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 16, "indexer_budget": 16,
                  "indexer_compress_ratio": 4, "ple_embed_dim": 32, "ngram_vocab_size_base": 1024,
                  "split_ngram_parts": 4, "hc_lowrank": 16},
    "muse_spark": {"hidden_sizes": [16, 16, 32, 64]},  # its audio tower's stage widths (a list): 2048 wide at the top
    "zaya": {"num_experts_per_tok": 1, "router_hidden_size": 32},  # ZAYA supports top-1 only
    # its layer-index lists are derived for 50 layers: one indexed-attention layer of 4, an indexer head per KV group
    "kolibri1_1": {"layer_types": ["sliding_attention"] * 3 + ["indexed_attention"], "index_layers": [3],
                   "kv_source_layers": [0, 1, 2, 3], "mlp_only_layers": [0], "index_num_heads": 1},
    "ernie4_5_vl_moe": {"rope_parameters": {"rope_type": "default", "mrope_section": [3, 3, 2]},  # sums to head/2
                        "moe_intermediate_size": [32, 32], "depth": 2},  # text and vision experts' widths
    # a dense drafter for Gemma 4 (its validation forbids MoE): built as such, to show it is refused
    "gemma4_assistant": {"text_config": {"hidden_size_per_layer_input": 0, "vocab_size_per_layer_input": 0,
                                         "num_experts": None, "enable_moe_block": False, "num_kv_shared_layers": 0}},
}
for _mt in ("gemma4", "glm5_next", "glm4v_moe", "hy_v4_vl", "dots3_note", "qwen4_exp"):  # text-only configs: the same
    FAMILY[_mt + "_text"] = FAMILY[_mt]
# Families whose tiny build fails for a reason outside MoEE, in words (the row shows it with the error's type).
WHY_NOT_BUILT = {
    "nemo_speechlm": "its audio tower's weights do not load back after saving at tiny sizes (transformers' "
                     "checkpoint conversion of q/k/v), so its MoE text tower is never reached",
}
VOCAB_KEYS = ("vocab_size", "vocab_size_per_layer_input", "unpadded_vocab_size")  # all = the tokenizer's
LAYER_COUNT_ATTRS = ("num_hidden_layers", "n_layers", "num_layers")
STACK_COUNT_ATTRS = ("encoder_layers", "decoder_layers", "num_decoder_layers")  # encoder-decoder families' stacks
log = logging.getLogger(__name__)


@dataclass
class Row:
    model_type: str
    status: str  # "ok", "error" (a clear error at run time), "differs" (wrong features: a defect), "not built"
    routers: str = ""  # "3 x 8" (MoE layers x experts)
    rw_dims: str = ""
    reference: str = ""
    notes: str = ""

    def markdown(self) -> str:
        return "| " + " | ".join([f"`{self.model_type}`", self.status, self.routers, self.rw_dims, self.reference,
                                  self.notes.replace("|", "/")]) + " |"


HEADER = ("| model type | status | routers (layers x experts) | RW dims | checked against | notes |\n"
          "|---|---|---|---|---|---|")


def _expert_attrs(cfg: dict) -> dict:
    """The config's expert counts (top level and nested dicts such as DBRX's ffn_config)."""
    found = {k: v for k, v in cfg.items() if k in EXPERT_COUNT_ATTRS and (v is None or isinstance(v, int))}
    for v in cfg.values():
        if isinstance(v, dict):
            found.update(_expert_attrs(v))
    return found


def moe_model_types() -> list[str]:
    """Model types whose (text) config has an expert-count attribute, and that have a causal LM or base model."""
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_MAPPING_NAMES,
    )

    out = []
    with _quiet():
        for mt in sorted(CONFIG_MAPPING.keys()):
            if mt not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_MAPPING_NAMES:
                continue
            try:
                cfg = CONFIG_MAPPING[mt]()
            except Exception:  # noqa: BLE001 a config class that cannot be built bare is listed by shrunk_config
                out.append(mt)
                continue
            if _expert_attrs(cfg.to_dict()):
                out.append(mt)
    return out


def _shrink(cfg: dict, n_layers_before: int | None = None, family: dict | None = None) -> dict:
    """Overrides making ``cfg`` (a config's to_dict) tiny; per-layer lists and patterns are cut to N_LAYERS.

    ``family`` (a FAMILY entry) sets its values wherever the key occurs, before anything else."""
    over: dict = {}
    family = family or {}
    layers = next((cfg[k] for k in LAYER_COUNT_ATTRS if isinstance(cfg.get(k), int)), n_layers_before)
    for key, value in cfg.items():
        if key in family:
            extra = family[key]
            over[key] = {**value, **_shrink(value, layers), **extra} if isinstance(value, dict) else extra
        elif key in SMALL and (type(value) is type(SMALL[key]) or (value is None and key in NULLABLE)):
            over[key] = SMALL[key]
        elif key in LAYER_COUNT_ATTRS + STACK_COUNT_ATTRS and isinstance(value, int):
            over[key] = min(value, N_LAYERS)
        elif key in EXPERT_COUNT_ATTRS and (value is None or isinstance(value, int)):  # HunYuan defaults to 1
            over[key] = N_EXPERTS
        elif key == "per_layer_config" and isinstance(value, dict):  # heterogeneous layers: those kept, shrunk
            over[key] = {i: {**v, **_shrink(v, layers)} for i, v in value.items() if int(i) < N_LAYERS}
        elif isinstance(value, dict):
            sub = _shrink(value, layers, family)
            if sub:
                over[key] = {**value, **sub}
        elif layers and isinstance(value, (list, str)) and len(value) == layers and layers > N_LAYERS \
                and key not in ("model_type", "architectures"):
            over[key] = value[:N_LAYERS]
    if "head_dim" in over and "qk_rope_head_dim" in over and "head_dim" not in family:
        # MLA: head_dim is the rotary part's width
        over["head_dim"] = over["qk_rope_head_dim"]
    if "kv_lora_rank" in over:  # MLA expands its latent to every query head: as many KV heads as query heads
        if "num_key_value_heads" in cfg and "num_key_value_heads" not in family:
            over["num_key_value_heads"] = over.get("num_attention_heads", cfg.get("num_attention_heads"))
        if "qk_head_dim" in cfg:  # derived in some configs, but serialized: recomputed for the shrunk parts
            over["qk_head_dim"] = sum(over.get(k, cfg.get(k) or 0) for k in ("qk_nope_head_dim", "qk_rope_head_dim"))
    return over


def _has_key(cfg: dict, key: str) -> bool:
    return key in cfg or any(_has_key(v, key) for v in cfg.values() if isinstance(v, dict))


def shrunk_config(model_type: str, vocab_size: int, special_ids: dict):
    """The family's default config made tiny (_shrink: N_LAYERS layers, N_EXPERTS experts, small widths), with the
    tokenizer's vocabulary size and special ids."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    family = FAMILY.get(model_type, {})
    try:
        base = cls().to_dict()
    except Exception:  # noqa: BLE001 a default config its own validation rejects: the family's values make it valid
        base = cls(**family).to_dict()
    over = _shrink(base, family=family)
    over.update({k: v for k, v in family.items() if not _has_key(base, k)})  # a value the defaults lack
    over.update({k: v for k, v in special_ids.items() if k in base})
    over.update({k: vocab_size for k in VOCAB_KEYS if k in base and not _has_key(family, k)})
    for sub in ("text_config",):
        if isinstance(over.get(sub), dict):
            over[sub].update({k: vocab_size for k in VOCAB_KEYS if k in over[sub] and not _has_key(family, k)})
            over[sub].update({k: v for k, v in special_ids.items() if k in over[sub]})
    return cls(**{k: v for k, v in base.items() if k not in ("transformers_version", "model_type")} | over)


@contextlib.contextmanager
def _quiet():
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            transformers.logging.set_verbosity(level)


_TOKENIZER = {}


def _tokenizer():
    if not _TOKENIZER:

        _TOKENIZER["tok"] = _train_tokenizer(512)
    return _TOKENIZER["tok"]


def build_tiny(model_type: str, out: Path):
    """Save a tiny random model of ``model_type`` (its causal LM, else its base model) with a tokenizer to ``out``;
    returns the model as built (transformers' own module, never through our loader: the reference)."""
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    tok = _tokenizer()
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    config = shrunk_config(model_type, len(tok), ids)
    torch.manual_seed(SEED)
    auto = AutoModelForCausalLM if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else AutoModel
    model = auto.from_config(config, dtype=torch.float32)
    for router in _routers_or_none(model):  # some families zero-init routers: all-zero RW would compare trivially
        if not router.module.weight.any():
            with torch.no_grad():
                router.module.weight.normal_(0.0, 0.1)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model.eval()


def _routers_or_none(model):
    try:
        return find_routers(model)
    except NotAMoEModelError:
        return []


def _reference(model, tokenizer, routers_in_ref: list[torch.nn.Module]) -> tuple[list, list, str]:
    """Per text, alone: hidden_states[-1] at the last token, and each router's logits there."""
    hs, rw, how = [], [], "router_logits"
    captured: list = []
    hooks = [m.register_forward_hook(lambda mod, a, o: captured.append(o[0] if isinstance(o, tuple) else o))
             for m in routers_in_ref]
    try:
        for text in TEXTS:
            captured.clear()
            ids = tokenizer(text, return_tensors="pt")
            with torch.no_grad():
                out = model(**ids, output_hidden_states=True, output_router_logits=True, use_cache=False)
            hs.append(out.hidden_states[-1][0, -1].float())
            recorded = getattr(out, "router_logits", None)
            if recorded and all(isinstance(t, torch.Tensor) for t in recorded):
                logits = [t.reshape(-1, t.shape[-1])[-1] for t in recorded]
                if all(is_probabilities(t) for t in logits):  # compared with softmax(RW) then
                    how = "router_logits (post-softmax)"
            else:
                how = "router hooks"
                logits = [t.reshape(-1, t.shape[-1])[-1] for t in captured]
            rw.append(torch.stack(logits).float())
    finally:
        for h in hooks:
            h.remove()
    return hs, rw, f"hidden_states, {how}"


def _notes(lm, ref_model) -> list[str]:
    """What is special about the family, read from the model, not from its name."""

    cfg = text_config(lm.model.config)
    notes = []
    n_layers = len(decoder_layers(lm.model))
    if len(lm.routers) < n_layers:
        notes.append(f"{n_layers - len(lm.routers)} of {n_layers} layers without router (dense/other) skipped")
    gates = sorted({n.split(".")[-1] for n, m in lm.model.named_modules()
                    if "shared" in n.split(".")[-1] and "gate" in n.split(".")[-1]})
    if gates:
        notes.append(f"shared-expert gate ({', '.join(gates)}) excluded")
    kinds = set(getattr(cfg, "layer_types", None) or []) - {"full_attention"}
    if kinds:
        notes.append(f"hybrid layers ({', '.join(sorted(map(str, kinds)))})")
    router = lm.routers[0].module
    if isinstance(getattr(router, "bias", None), torch.Tensor):
        notes.append("router bias included in RW")
    buffers = [n for n, _ in router.named_buffers()]
    if buffers:
        notes.append(f"router buffer {', '.join(buffers)} (selection only) not in RW")
    score = getattr(cfg, "scoring_func", None) or getattr(cfg, "score_function", None)
    if score:
        notes.append(f"scoring {score}; RW = pre-{score} logits")
    if getattr(cfg, "n_group", None) and getattr(cfg, "n_group") > 1:
        notes.append("group-limited top-k")
    if (k := padding_exact_up_to(lm)) is not None:
        notes.append(f"sparse attention (index_topk {k}): texts over {k} tokens are not padded")
    if text_config(lm.model.config) is not lm.model.config:
        notes.append("text tower of a multimodal model")
    return notes


def check_family(model_type: str, workdir: str | Path | None = None) -> Row:
    """Build, load, extract and compare one family; the row says how it went. The reference is the model as built
    (transformers' own module, in memory), so a weight our loading lost or altered shows as a difference."""

    with tempfile.TemporaryDirectory(dir=workdir) as tmp, _quiet():
        path = Path(tmp) / model_type
        try:
            ref_model = build_tiny(model_type, path)
        except Exception as err:  # noqa: BLE001 a config we cannot shrink: reported, not hidden
            return Row(model_type, "not built", notes=_why(model_type, _one_line(err)))
        try:
            lm = load_model(str(path), dtype="float32", device="cpu")
        except (NotAMoEModelError, UnsupportedRouterError) as err:
            return Row(model_type, "error", notes=_one_line(err))
        except Exception as err:  # noqa: BLE001
            return Row(model_type, "not built", notes=_why(model_type, "load: " + _one_line(err)))
        routers = f"{len(lm.routers)} x {lm.n_experts}"
        dims = str(len(lm.routers) * lm.n_experts)
        by_name = dict(ref_model.named_modules())
        ref_routers = [next(m for n, m in by_name.items() if n == r.name or n.endswith("." + r.name))
                       for r in lm.routers]
        try:
            hs, rw, how = _reference(ref_model, lm.tokenizer, ref_routers)
        except Exception as err:  # noqa: BLE001
            return Row(model_type, "not built", routers, dims, notes="reference: " + _one_line(err))
        worst = {"hs": 0.0, "rw": 0.0}
        try:
            # each text alone, then all 7 in one batch (max_padding=1: "x" next to 55 tokens is mostly padding)
            for side, batch in (("left", 1), ("left", 7), ("right", 7)):
                feats = extract(lm, TEXTS, batch_size=batch, padding_side=side, max_padding=1.0, progress=False)
                if "post-softmax" in how:
                    feats["rw"] = torch.from_numpy(feats["rw"]).softmax(-1).numpy()
                for name, ref in (("hs", hs), ("rw", rw)):
                    want = np.stack([r.numpy() for r in ref])
                    if feats[name].shape != want.shape:
                        raise ValueError(f"{name} shape {feats[name].shape} != model's {want.shape}")
                    worst[name] = max(worst[name], float(np.abs(feats[name] - want).max()))
        except Exception as err:  # noqa: BLE001
            return Row(model_type, "differs", routers, dims, how, "extract: " + _one_line(err))
        notes = _notes(lm, ref_model)
        bad = [f"{k} off by {v:.1e}" for k, v in worst.items() if not v <= TOL]
        return Row(model_type, "differs" if bad else "ok", routers, dims, how, "; ".join(bad + notes))


def _why(model_type: str, error: str) -> str:
    why = WHY_NOT_BUILT.get(model_type)
    return f"{why} ({error.split(':')[0]})" if why else error


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    text = re.sub(r"/\S*/", "", text)  # no machine paths in the table
    return f"{type(err).__name__}: {text[:220]}"


def table(rows: list[Row]) -> str:
    return "\n".join([HEADER] + [r.markdown() for r in rows])


def parse_table(text: str) -> dict[str, str]:
    """Rows of a coverage table in markdown, by model type."""
    return {m.group(1): line.strip() for line in text.splitlines() if (m := re.match(r"\| `([^`]+)` \|", line))}


def summary(rows: dict[str, str]) -> str:
    """The line under the table: counts per status on the installed transformers (rows: parse_table's)."""
    import transformers

    status = {mt: row.split("|")[2].strip() for mt, row in rows.items()}
    count = {k: sum(v == k for v in status.values()) for k in ("ok", "error", "not built", "differs")}
    not_built = ", ".join(f"`{mt}`" for mt, v in status.items() if v == "not built")
    return (f"On transformers {transformers.__version__}: {len(rows)} model types, {count['ok']} **ok**, "
            f"{count['error']} **error**, {count['not built']} **not built**{f' ({not_built})' if not_built else ''}, "
            + ("none wrong." if not count["differs"] else f"{count['differs']} **differs**."))
