"""Print the table of the 19 paper datasets (docs/reproducing.md), read from the installed mteb's own task metadata, with what
differs from mteb 1.14 (the base of the paper's public code's forked mteb).

    python scripts/paper_task_table.py            # markdown table
    python scripts/paper_task_table.py --sizes    # + texts encoded per dataset and feature-cache disk per model
    python scripts/paper_task_table.py --write    # replace docs/reproducing.md's table (between the markers)

Nothing here is typed in by hand except ``V1``: the mteb 1.x side, read from mteb's git tag 1.14.0 (the public
code's ``mteb/__init__.py`` is that of mteb 1.13.1-1.14.17, and these 19 tasks' metadata is the same over that
range). tests/test_task_table.py checks that docs/reproducing.md's table is this script's output.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- paper-tasks:start -->", "<!-- paper-tasks:end -->"
sys.path.insert(0, str(ROOT))

# mteb 1.14.0, per task: (AbsTask class, main score, eval splits, dataset path, revision[:7]). Every 1.14 task here
# has hf_subsets ["default"] (eval_langs ["eng-Latn"]).
_RERANK_V1 = "AbsTaskReranking", "map", ("test",)
V1 = {
    "TweetSentimentExtractionClassification": ("AbsTaskClassification", "accuracy", ("test",), "mteb/tweet_sentiment_extraction", "d604517"),
    "EmotionClassification": ("AbsTaskClassification", "accuracy", ("validation", "test"), "mteb/emotion", "4f58c6b"),
    "ToxicConversationsClassification": ("AbsTaskClassification", "accuracy", ("test",), "mteb/toxic_conversations_50k", "edfaf9d"),
    "TwentyNewsgroupsClustering": ("AbsTaskClustering", "v_measure", ("test",), "mteb/twentynewsgroups-clustering", "6125ec4"),
    "MedrxivClusteringS2S": ("AbsTaskClustering", "v_measure", ("test",), "mteb/medrxiv-clustering-s2s", "35191c8"),
    "TwitterURLCorpus": ("AbsTaskPairClassification", "max_ap", ("test",), "mteb/twitterurlcorpus-pairclassification", "8b6510b"),
    "TwitterSemEval2015": ("AbsTaskPairClassification", "max_ap", ("test",), "mteb/twittersemeval2015-pairclassification", "70970da"),
    "AskUbuntuDupQuestions": (*_RERANK_V1, "mteb/askubuntudupquestions-reranking", "2000358"),
    "SciDocsRR": (*_RERANK_V1, "mteb/scidocs-reranking", "d3c5e1f"),
    "StackOverflowDupQuestions": (*_RERANK_V1, "mteb/stackoverflowdupquestions-reranking", "e185fbe"),
    "STS12": ("AbsTaskSTS", "cosine_spearman", ("test",), "mteb/sts12-sts", "a0d554a"),
    "STS13": ("AbsTaskSTS", "cosine_spearman", ("test",), "mteb/sts13-sts", "7e90230"),
    "STS14": ("AbsTaskSTS", "cosine_spearman", ("test",), "mteb/sts14-sts", "6031580"),
    "STS15": ("AbsTaskSTS", "cosine_spearman", ("test",), "mteb/sts15-sts", "ae752c7"),
    "STS16": ("AbsTaskSTS", "cosine_spearman", ("test",), "mteb/sts16-sts", "4d8694f"),
    "BIOSSES": ("AbsTaskSTS", "cosine_spearman", ("test",), "mteb/biosses-sts", "d3fb88f"),
    "SICK-R": ("AbsTaskSTS", "cosine_spearman", ("test",), "mteb/sickr-sts", "20a6d6f"),
    "STSBenchmark": ("AbsTaskSTS", "cosine_spearman", ("test",), "mteb/stsbenchmark-sts", "b0fddb5"),
    "SummEval": ("AbsTaskSummarization", "cosine_spearman", ("test",), "mteb/summeval", "cda12ad"),
}
# The paper's three models: HS dims (hidden size) and RW dims (MoE layers x experts), from their hub configs
# (README: What is computed; conf/model/*.yaml).
MODEL_DIMS = {"olmoe": (2048, 16 * 64), "qwen_moe": (2048, 24 * 60), "deepseek_moe": (2048, 27 * 64)}
KEY_BYTES = 16  # moee_exp/features/cache.py: each record is a 16-byte text key + the float values
TRUNCATED_BYTES = KEY_BYTES + 1  # and a per-text "truncated" flag (1 byte), stored beside the features


def paper_tasks() -> list[str]:
    return yaml.safe_load((ROOT / "conf/tasks/paper.yaml").read_text())["names"]


def abstask(task) -> str:
    from mteb.abstasks.abstask import AbsTask

    return next(c.__name__ for c in type(task).__mro__ if c.__name__.startswith("AbsTask") and c is not AbsTask)


def differences(task) -> list[str]:
    m = task.metadata
    v1_cls, v1_main, v1_splits, v1_path, v1_rev = V1[m.name]
    out = []
    if tuple(m.eval_splits) != v1_splits:
        out.append(f"eval splits {'+'.join(v1_splits)} → {'+'.join(m.eval_splits)}")
    if m.main_score != v1_main:
        out.append(f"main score `{v1_main}` → `{m.main_score}`")
    if abstask(task) != v1_cls:
        out.append(f"class {v1_cls} → {abstask(task)}")
    if m.dataset["path"] != v1_path:
        out.append(f"data repackaged: `{v1_path}` → `{m.dataset['path']}`")
    elif not str(m.dataset["revision"]).startswith(v1_rev):
        out.append(f"data revision {v1_rev} → {str(m.dataset['revision'])[:7]}")
    if task.hf_subsets != ["default"]:
        out.append(f"subsets default → {', '.join(task.hf_subsets)}")
    if m.superseded_by:
        out.append(f"superseded by `{m.superseded_by}` (not used: the paper's version runs)")
    return out or ["none"]


def table() -> str:
    import mteb

    lines = ["| dataset | type | main score | eval split | subsets | mteb 2.x class | vs mteb 1.14 (the paper's) |",
             "|---|---|---|---|---|---|---|"]
    for name in paper_tasks():
        t = mteb.get_task(name)
        m = t.metadata
        lines.append(f"| {name} | {m.type} | `{m.main_score}` | {', '.join(m.eval_splits)} | {', '.join(t.hf_subsets)}"
                     f" | {abstask(t)} | {'; '.join(differences(t))} |")
    return "\n".join(lines)


def sizes() -> str:
    """Texts the evaluators encode at real size (moee_exp.scoring.synthetic_tasks.plan, from mteb's statistics) and the
    feature cache's bytes for them: float32 records of 16-byte key + 4 bytes per value, HS and RW features."""
    import mteb

    from moee_exp.scoring.synthetic_tasks import plan

    rows, total, total_unique = [], 0, 0
    for name in paper_tasks():
        task = mteb.get_task(name)
        n = unique = 0
        for split, shape in plan(task, "real")["default"].items():
            stats = task.metadata.descriptive_stats[split]
            distinct = sum(v["unique_texts"] for k, v in stats.items() if k.endswith("statistics") and v
                           and "unique_texts" in v)  # per text column; columns may share texts: an upper bound
            n += shape["texts"]
            unique += min(shape["texts"], distinct or shape["texts"])
        rows.append(f"| {name} | {n:,} | {unique:,} |")
        total, total_unique = total + n, total_unique + unique
    lines = ["| dataset | texts the evaluator encodes | distinct texts (forward passes per model x prompt) |",
             "|---|---|---|", *rows, f"| **all 19** | **{total:,}** | **{total_unique:,}** |", ""]
    lines += ["| model | HS + RW dims | cache bytes per text (float32) | 19 datasets, one prompt |", "|---|---|---|---|"]
    for model, (hs, rw) in MODEL_DIMS.items():
        per_text = (KEY_BYTES + 4 * hs) + (KEY_BYTES + 4 * rw) + TRUNCATED_BYTES
        lines.append(f"| {model} | {hs} + {rw} | {per_text:,} | {per_text * total_unique / 1e9:.2f} GB |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", action="store_true", help="also the text counts and feature-cache disk")
    ap.add_argument("--write", action="store_true", help="replace docs/reproducing.md's table")
    args = ap.parse_args(argv)
    if args.write:
        readme = ROOT / "docs" / "reproducing.md"
        text = readme.read_text(encoding="utf-8")
        new, n = re.subn(re.escape(START) + r".*?" + re.escape(END), lambda _: f"{START}\n{table()}\n{END}", text,
                         flags=re.S)
        if n != 1:
            print(f"error: docs/reproducing.md has no {START} ... {END} block", file=sys.stderr)
            return 1
        readme.write_text(new, encoding="utf-8")
    print(table())
    if args.sizes:
        print()
        print(sizes())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
