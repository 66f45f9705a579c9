"""Extraction overhead and throughput (sections `overhead` and `throughput`, rows "2" of the machine table).

overhead: our extraction (hooks, pooling) versus a bare forward of the same padded batches, and the same end to end
(with tokenization, padding and output assembly); reported as the ratio extraction / bare forward (target <= 1.10x),
medians of max(--repeats, 9) interleaved runs. On the default tiny model and on the larger tiny model (BIG_TINY).
throughput: (olmoe-full) texts/s and tokens/s of our extraction: the same measurement on --texts mixed texts of the
OLMoE-1B-7B architecture, reported in the same rows (texts/s).
"""

from __future__ import annotations

import torch

from benchmarks.common import median, padded_batches, timed
from moee_exp.features.extract import extract, forward_features


def overhead(lm, texts, batch_size, repeats) -> dict:
    prompted, batches = padded_batches(lm, texts, batch_size)
    dev = lm.device

    def bare():
        with torch.inference_mode():
            for ids, mask in batches:
                lm.model(input_ids=ids, attention_mask=mask, use_cache=False)

    def ours():
        for ids, mask in batches:
            forward_features(lm, ids, mask, ("hs", "rw"))

    def ours_end_to_end():  # + tokenization, padding, batching, output assembly
        extract(lm, prompted, batch_size=batch_size, progress=False)

    fns = {"bare": bare, "ours": ours, "ours_end_to_end": ours_end_to_end}
    for fn in fns.values():
        fn()  # warm-up
    repeats = max(repeats, 9)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():  # interleaved, so drift hits every variant alike
            times[k].append(timed(fn, dev))
    med = {k: median(v) for k, v in times.items()}
    tokens = int(sum(int(m.sum()) for _, m in batches))
    return {
        "texts": len(texts),
        "batches": len(batches),
        "tokens": tokens,
        "seconds": med,
        "ratio": med["ours"] / med["bare"],
        "ratio_end_to_end": med["ours_end_to_end"] / med["bare"],
        "texts_per_s": len(texts) / med["ours_end_to_end"],
        "tokens_per_s": tokens / med["ours_end_to_end"],
    }


def rows(res: dict, args) -> list[str]:
    """The table's rows of this section (default tiny / OLMoE-full, then the larger tiny model)."""
    lines = []
    first = "default tiny model" if args.model == "tiny" else f"OLMoE-1B-7B architecture ({res.get('setup', '')})"
    for key, label in (("overhead", first), ("overhead_big", "larger tiny model")):
        if key in res:
            o = res[key]
            ok = "met" if o["ratio"] <= 1.10 else "**missed**"
            s = o["seconds"]
            lines += [
                f"| 2 | extraction / bare forward, same batches, {label} ({o['texts']} texts, {o['tokens']} tokens; "
                f"{s['ours']:.3f} s / {s['bare']:.3f} s) | **{o['ratio']:.3f}x** | <= 1.10x ({ok}) |",
                f"| 2 | same with tokenization, padding and output assembly ({s['ours_end_to_end']:.3f} s; "
                f"{o['texts_per_s']:.0f} texts/s) | {o['ratio_end_to_end']:.3f}x | (comparison) |",
            ]
    return lines
