"""Print (or write into docs/coverage.md) the coverage table of the installed transformers' MoE families.

    python scripts/moe_coverage.py                  # markdown table on stdout
    python scripts/moe_coverage.py --write          # replace docs/coverage.md's table (between the coverage markers)
    python scripts/moe_coverage.py qwen3_moe gpt_oss  # some families only
    python scripts/moe_coverage.py --jobs 4         # families in parallel processes

Each row is devtools.coverage.check_family: a tiny model of the family built from its own config class and our
HS/RW checked against the model's own outputs. tests/test_coverage.py regenerates every row.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PAGE = ROOT / "docs" / "coverage.md"
START, END = "<!-- moe-coverage:start -->", "<!-- moe-coverage:end -->"


def _row(model_type: str) -> str:
    import torch

    logging.disable(logging.WARNING)
    torch.set_num_threads(1)  # tiny models: processes, not threads, are what runs families in parallel
    from devtools.coverage import check_family

    row = check_family(model_type).markdown()
    print(row, file=sys.stderr, flush=True)  # progress
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_types", nargs="*")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--write", action="store_true", help="replace docs/coverage.md's table")
    args = p.parse_args(argv)
    from devtools.coverage import HEADER, moe_model_types, parse_table, summary

    types = args.model_types or moe_model_types()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(_row, types))
    text = "\n".join([HEADER, *rows, "", summary(parse_table("\n".join(rows)))])
    if args.write:
        readme = PAGE.read_text(encoding="utf-8")
        block = f"{START}\n{text}\n{END}"
        new, n = re.subn(re.escape(START) + r".*?" + re.escape(END), lambda _: block, readme, flags=re.S)
        if n != 1:
            print(f"error: {PAGE.relative_to(ROOT)} has no {START} ... {END} block", file=sys.stderr)
            return 1
        PAGE.write_text(new, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
