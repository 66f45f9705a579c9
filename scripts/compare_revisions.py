"""Same rows before and after a change that should not move a number (a refactor): run the default job and a small
sweep at two git revisions and compare every score of every row.

    python scripts/compare_revisions.py d95c834 HEAD      # exit 1 if any score differs

Each revision is checked out in a temporary git worktree and run with this environment's Python (its own
``moee_exp`` comes first on the path: run.py sits in the worktree root), each with its own empty feature cache, so
both extract and score from scratch. Offline: tiny model, demo tasks, W&B off.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
# The default job (protocol=paper), a sweep over the paper's four emb kinds under each protocol, and α chosen by auto.
JOBS = {
    "default": [],
    "sweep": ["-m", "emb=hs,rw,moee_concat,moee_sum", "protocol=clean"],
    "sweep_paper": ["-m", "emb=hs,rw,moee_concat,moee_sum", "protocol=paper"],
    "auto_alpha": ["emb=moee_sum", "weights=auto", "protocol=clean"],
}
# Fields that differ by design between two runs: when and by which process, how long, and the row key and code
# hash (they hash our code's source, which any change moves). Everything else of a row, every score included, must
# be equal (NaN equals NaN: a metric mteb cannot compute on the demo data).
VOLATILE = {"eval_time_s", "computed_at", "run_uid", "row_key", "identity.scorer.code", "alpha_info.time_s"}


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def flat(node, prefix: str = "") -> dict:
    """A result row (results/<task>.json) as {dotted path: leaf value}: every score mteb reports, per experiment."""
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    if isinstance(node, list):
        return {k: v for i, value in enumerate(node) for k, v in flat(value, f"{prefix}{i}.").items()}
    return {prefix[:-1]: node}


def run_revision(rev: str, tmp: Path) -> dict[str, dict]:
    tree = tmp / f"tree-{rev}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
    env = {**os.environ, "MOEE_CACHE_DIR": str(tmp / f"cache-{rev}"), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    rows = {}
    try:
        for job, args in JOBS.items():
            out = tmp / f"out-{rev}-{job}"
            where = f"hydra.sweep.dir={out}" if "-m" in args else f"hydra.run.dir={out}"
            cmd = [sys.executable, "run.py", *args, where, "logger=none", "progress=false"]
            print(f"[{rev}] {job}: {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
            for path in sorted(out.rglob("results/*.json")):
                row = flat(json.loads(path.read_text()))
                rows[f"{job}/{row['emb']}/{row['task']}"] = {k: v for k, v in row.items() if k not in VOLATILE}
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    return rows


def compare(before: dict[str, dict], after: dict[str, dict]) -> pd.DataFrame:
    """One line per row and field that differs, with both values (empty: identical)."""
    diffs = [{"row": r, "field": "(row)", "before": r in before, "after": r in after}
             for r in sorted(set(before) ^ set(after))]
    for r in sorted(set(before) & set(after)):
        b, a = before[r], after[r]
        for field in sorted(set(b) | set(a)):
            if not same(b.get(field, "(missing)"), a.get(field, "(missing)")):
                diffs.append({"row": r, "field": field, "before": b.get(field), "after": a.get(field)})
    return pd.DataFrame(diffs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after", nargs="?", default="HEAD")
    parser.add_argument("--ignore", action="append", default=[], metavar="PREFIX",
                        help="leave out the row fields under this dotted prefix, e.g. --ignore identity for a change "
                             "that moves how a row's identity is laid out (its scores must still be equal)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="moee-compare-") as tmp:
        before, after = run_revision(args.before, Path(tmp)), run_revision(args.after, Path(tmp))
    if args.ignore:
        keep = lambda row: {k: v for k, v in row.items() if not k.startswith(tuple(args.ignore))}  # noqa: E731
        before, after = ({r: keep(row) for r, row in rows.items()} for rows in (before, after))
    diffs = compare(before, after)
    n_values = sum(len(row) for row in before.values())
    left_out = ", ".join(sorted(VOLATILE) + [f"{p}*" for p in args.ignore])
    print(f"{len(before)} rows, {n_values} fields compared (every score of every row; not: {left_out})")
    if diffs.empty:
        print(f"identical: every row of {args.before} equals {args.after}'s")
        return 0
    print(diffs.to_string(index=False))
    return 1


if __name__ == "__main__":
    sys.exit(main())
