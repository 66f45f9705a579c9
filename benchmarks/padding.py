"""Padding (section `padding`, rows "3" of the machine table: docs/benchmarks/cpu-tiny.md).

Padded tokens / real tokens with length-sorted batches, on a set of 1000 mixed lengths (demo texts and joins of them,
~10 to ~500 tokens), next to batches in input order; reported as the ratio (target <= 1.15).
"""

from __future__ import annotations

from benchmarks.common import TEMPLATE, mixed_texts
from moee_exp.features.extract import length_batches, prompt_texts


def padding_section(lm, batch_size: int) -> dict:
    texts = mixed_texts()
    tok = lm.tokenizer
    prompted = prompt_texts(texts, TEMPLATE, tok, 512).texts
    lengths = [len(e) for e in tok(prompted, truncation=True, max_length=512)["input_ids"]]

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    real = sum(lengths)
    in_order = [list(range(i, min(i + batch_size, len(lengths)))) for i in range(0, len(lengths), batch_size)]
    return {
        "texts": len(texts),
        "batch_size": batch_size,
        "real_tokens": real,
        "min_len": min(lengths),
        "max_len": max(lengths),
        "sorted": padded(length_batches(lengths, batch_size)) / real,
        "input_order": padded(in_order) / real,
    }


def rows(res: dict, args) -> list[str]:
    """The table's rows of this section."""
    lines = []
    if "padding" in res:
        p = res["padding"]
        ok = "met" if p["sorted"] <= 1.15 else "**missed**"
        lines += [
            f"| 3 | padded / real tokens, length-sorted batches of {p['batch_size']} ({p['texts']} texts, "
            f"{p['min_len']}-{p['max_len']} tokens) | **{p['sorted']:.3f}** | <= 1.15 ({ok}) |",
            f"| 3 | same, batches in input order (no sorting) | {p['input_order']:.3f} | (comparison) |",
        ]
    return lines
