"""Tiny random MoE models for offline runs and tests.

A tiny model is built from transformers' own config class for a family (``AutoConfig.for_model``) with a fixed
seed and a byte-level BPE tokenizer trained offline, then saved as a normal checkpoint dir. From there it is loaded
by exactly the same code as a hub model, so the smoke run exercises the real path. Its scores mean nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import torch

from ..faults import is_write_fault, pid_alive, write_error
from .loading import register_own_models
from .prompts import TEMPLATES

DATA_DIR = Path(__file__).parents[1] / "data"
SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}


def _tokenizer_corpus() -> list[str]:
    """Text the tokenizer learns merges from: the prompt templates and the bundled demo data."""

    lines = list(TEMPLATES.values())
    for path in sorted(DATA_DIR.glob("demo/*")):
        lines += path.read_text(encoding="utf-8").splitlines()
    return lines


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Byte level: any string (odd Unicode, control characters) maps to tokens; nothing is unknown.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def spec_hash(spec: dict) -> str:
    blob = json.dumps({"spec": spec, "corpus": _tokenizer_corpus()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_tiny_model(spec: dict, cache_dir: str | Path) -> Path:
    """Return the dir of the tiny model described by ``spec``, building and saving it on first use."""
    spec = dict(spec)
    out = Path(cache_dir).expanduser() / "tiny" / f"{spec['model_type']}-{spec_hash(spec)}"
    if (out / "config.json").exists():
        return out
    from transformers import AutoConfig, AutoModelForCausalLM

    register_own_models()  # model types this project owns (e.g. deepseek) must be registered

    tokenizer = _train_tokenizer(spec.get("vocab_size", 512))
    ids = {k.replace("_token", "_token_id"): tokenizer.convert_tokens_to_ids(v) for k, v in SPECIAL_TOKENS.items()}
    ids.pop("unk_token_id")
    config = AutoConfig.for_model(spec["model_type"], vocab_size=len(tokenizer), **ids, **spec.get("config", {}))
    torch.manual_seed(spec.get("seed", 0))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _remove_dead_builds(out)
    tmp = out.with_name(f"{out.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    except Exception as err:  # full disk, file-size limit, unwritable dir: no half-built model is left behind
        shutil.rmtree(tmp, ignore_errors=True)

        if is_write_fault(err):
            raise write_error(out, err, "model.cache_dir (embed: --cache-dir)") from None
        raise
    try:
        tmp.rename(out)  # atomic: a half-built model is never picked up
    except OSError:  # another process built it first
        shutil.rmtree(tmp)
        if not (out / "config.json").exists():
            raise
    return out


def _remove_dead_builds(out: Path) -> None:
    """Temp dirs of builds whose process is gone on this host (killed mid-save): never read, so removed."""

    for tmp in out.parent.glob(f"{out.name}.tmp-{socket.gethostname()}-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)

