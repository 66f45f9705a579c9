"""Embed one's own texts: `python -m moee_exp.embed --model <hub id | dir | conf name> --input texts.txt --output f.npz`.

Writes float32 arrays in input order: hs (n, hidden), rw (n, n_moe_layers * n_experts), emb (the fused embedding).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

from .api import embed_texts
from .errors import USER_ERRORS
from .fuse import KINDS, RW_ACTIVATIONS, STANDARDIZE, fuse
from .loading import QUANTIZATIONS, load_model
from .prompts import TEMPLATES

CONF_MODELS = Path(__file__).resolve().parents[1] / "conf" / "model"
DEFAULT_CACHE = "~/.cache/moee_exp"


def resolve_model(name: str, cache_dir: str) -> tuple[str, bool]:
    """A conf/model/<name>.yaml option (e.g. tiny, olmoe) or else a hub id / local dir; returns (path, trust_remote_code)."""
    conf = CONF_MODELS / f"{name}.yaml"
    if "/" in name or not conf.exists():
        return name, False
    spec = yaml.safe_load(conf.read_text())
    if spec.get("tiny"):
        from .tiny import ensure_tiny_model

        return str(ensure_tiny_model(spec["tiny"], cache_dir)), False
    return spec["name_or_path"], bool(spec.get("trust_remote_code", False))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m moee_exp.embed", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="hub id, local dir, or a conf/model option such as tiny or olmoe")
    p.add_argument("--input", required=True, type=Path, help="UTF-8 text file, one text per line")
    p.add_argument("--output", required=True, type=Path, help=".npz file to write")
    p.add_argument("--prompt", default="prompteol", choices=list(TEMPLATES))
    p.add_argument("--template", help="your own prompt template containing {text} (overrides --prompt)")
    p.add_argument("--emb", default="moee_sum", choices=KINDS, help="which fused embedding to store as `emb`")
    p.add_argument("--alpha", type=float, default=1.0, help="moee_sum weight of cos(RW)")
    p.add_argument("--rw-activation", default="logits", choices=RW_ACTIVATIONS)
    p.add_argument("--standardize", default=None, choices=STANDARDIZE, help="default: text for moee_concat, else none")
    p.add_argument("--revision")
    p.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16, float16")
    p.add_argument("--quantization", default="none", choices=QUANTIZATIONS)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where tiny models are built")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        texts = args.input.read_text(encoding="utf-8").splitlines()
        path, trust = resolve_model(args.model, args.cache_dir)
        lm = load_model(
            path,
            revision=args.revision,
            dtype=args.dtype,
            quantization=args.quantization,
            device=args.device,
            trust_remote_code=args.trust_remote_code or trust,
        )
        feats = embed_texts(
            lm, texts, args.prompt, template=args.template, max_length=args.max_length, batch_size=args.batch_size,
            progress=True,
        )
        standardize = args.standardize or ("text" if args.emb == "moee_concat" else "none")
        emb = fuse(feats, args.emb, alpha=args.alpha, rw_activation=args.rw_activation, standardize=standardize)
    except (*USER_ERRORS, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.output, hs=feats["hs"], rw=feats["rw"].reshape(len(texts), -1), emb=emb)
    print(f"wrote {args.output}: {len(texts)} texts, hs {feats['hs'].shape[1]}, rw {feats['rw'].shape[1]}x"
          f"{feats['rw'].shape[2]}, emb ({args.emb}) {emb.shape[1]} dims")
    return 0


if __name__ == "__main__":
    sys.exit(main())
