"""Our ``protocol=paper`` against the public code's own outputs (tests/fixtures/public_code/, see its FORMAT.md):
the public code (tianyi-lab/MoE-Embedding, its forked mteb 1.x, its patched model files, an old transformers) was
run on tiny random checkpoints of OLMoE, Qwen2-MoE and DeepSeekMoE and on the bundled demo tasks under the names of
paper datasets; its prompted strings, embeddings (per encode call) and scores are stored there as numbers.

Used by tests/test_paper_protocol.py (CI) and ``python -m devtools.public_fixture`` from the repo root (the
comparison table in BENCHMARKS.md, "Paper protocol vs the public code").
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from moee_exp.features.cache import open_cache
from moee_exp.features.extract import prompt_texts
from moee_exp.features.instructions import DEMO_NAMESAKES
from moee_exp.jobs.config import read_job, register
from moee_exp.jobs.runner import run_job
from moee_exp.scoring.demo_tasks import DEMO_TASKS
from moee_exp.scoring.fuse import fuse
from moee_exp.scoring.spec import build_encoder

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "public_code"
FAMILIES = {"olmoe": "olmoe", "qwen2_moe": "qwen_moe", "deepseek": "deepseek_moe"}  # fixture family -> conf/model
EMB_INFO = {"HS": "hs", "RW": "rw", "MoEE": "moee_concat"}  # the public code's --emb_info -> our emb kind


def available() -> bool:
    return (FIXTURE / "scores.json").exists()


@lru_cache(maxsize=1)
def scores() -> list[dict]:
    return json.loads((FIXTURE / "scores.json").read_text())


@lru_cache(maxsize=1)
def texts() -> dict:
    return json.loads((FIXTURE / "texts.json").read_text())


@lru_cache(maxsize=1)
def embeddings() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "embeddings.npz") as z:
        return {k: z[k] for k in z.files}


def demo_task_of(paper_name: str) -> str:
    """The bundled demo task the fixture ran under ``paper_name`` (moee_exp.features.instructions.DEMO_NAMESAKES)."""

    return next(demo for demo, name in DEMO_NAMESAKES.items() if name == paper_name)


def overrides(family: str, embed_method: str, emb_info: str, ensemble: bool, weight, batch_size: int) -> list[str]:
    """The runner overrides of one fixture run: protocol=paper on the fixture checkpoint, in fp32 as it was run."""
    kind = "moee_sum" if ensemble else EMB_INFO[emb_info]
    out = [
        "protocol=paper", f"model={FAMILIES[family]}", f"model.name_or_path={FIXTURE / 'checkpoints' / family}",
        f"model.name=public-{family}", "model.quantization=none", "model.dtype=float32", "model.device=cpu",
        f"prompt={embed_method}", f"emb={kind}", f"emb.standardize_batch_size={batch_size}", "tasks=demo",
        "logger=none", "progress=false",
    ]  # fmt: skip
    if ensemble:
        out.append(f"weights.alpha={float(weight)}")
    return out


def encoder_for(family: str, embed_method: str, emb: str, batch_size: int):
    """Our runner's encoder (protocol=paper, fp32) for one fixture key's family x prompt x emb ("HS", "RW", "MoEE",
    or "MoEE_sum_HS" / "MoEE_sum_RW": the blocks the public code's MoEE(sum) compares)."""
    emb_info, ensemble = ("MoEE", True) if emb.startswith("MoEE_sum") else (emb, False)
    return _encoder(family, embed_method, emb_info, ensemble, batch_size)


@lru_cache(maxsize=None)
def _encoder(family: str, embed_method: str, emb_info: str, ensemble: bool, batch_size: int):
    """Built once per family x prompt x emb (every task and encode call of the fixture uses the same encoder); its
    featurizer reads and fills the job's feature cache, as the runner's does, so the emb kinds of one family and
    prompt extract each text once."""
    from hydra import compose, initialize_config_dir

    register()
    conf = ROOT / "conf"
    with initialize_config_dir(str(conf), version_base=None):
        cfg = compose("config", overrides=overrides(family, embed_method, emb_info, ensemble, 1.0, batch_size))
    job = read_job(cfg)
    return build_encoder(job.spec, cache=open_cache(job.cache), alpha=1.0)  # as the runner builds its encoder


def our_embedding(key: str, batch_size: int) -> tuple[np.ndarray, list[str]]:
    """Our embedding of one stored encode call (key "<family>/<embed_method>/<emb>/<task>/<call>") and our prompted
    strings of its texts."""
    import mteb

    family, embed_method, emb, task, call = key.split("/")
    enc = encoder_for(family, embed_method, emb, batch_size)
    meta = mteb.get_task(task).metadata
    raw = texts()[f"{task}/{call}"]  # the raw inputs of a task's encode call are the same in every run
    side = ("query", "document")[int(call)] if meta.type == "Reranking" else None  # reranking: queries, then corpus
    instruction = enc.instructions(meta, side) if enc.instructions else ""
    prompted = prompt_texts(raw, enc.model.template, None, 0, enc.model.normalize, instruction, "paper").texts
    if emb.startswith("MoEE_sum"):
        hs, rw = enc.encode_blocks(raw, task_metadata=meta, prompt_type=side)
        return (hs if emb.endswith("HS") else rw), prompted

    return fuse(enc.features(raw, meta, side), enc.kind, **enc.fuse_kwargs), prompted


def public_prompted(key: str) -> list[str] | None:
    """The exact strings the public code tokenized for this key's encode call (stored for some calls)."""
    _, embed_method, _, task, call = key.split("/")
    return texts().get(f"{task}/{call}/prompted/{embed_method}")


NAMESAKE_ATTRS = ("samples_per_label", "n_experiments", "evaluator")  # evaluation settings a task class carries


@contextmanager
def as_namesakes():
    """The demo tasks evaluated with their namesake paper dataset's settings, as the fixture ran them in the public
    code (EmotionClassification: 16 samples per label; SummEval: mteb's DeprecatedSummarizationEvaluator)."""
    import mteb

    saved = []
    for demo, name in DEMO_NAMESAKES.items():
        cls, paper = DEMO_TASKS[demo], mteb.get_task(name)
        for attr in NAMESAKE_ATTRS:
            if getattr(cls, attr, None) is not None and getattr(paper, attr, None) is not None:
                saved.append((cls, attr, cls.__dict__.get(attr, _MISSING)))
                setattr(cls, attr, getattr(paper, attr))
    try:
        yield
    finally:
        for cls, attr, value in reversed(saved):
            if value is _MISSING:
                delattr(cls, attr)
            else:
                setattr(cls, attr, value)


_MISSING = object()


def run_ours(rows: list[dict], tmp: Path, cache_dir: Path | str | None = None) -> list[dict]:
    """Our main score for each fixture row (one runner job per family x prompt x emb, all six tasks). The jobs'
    paths.cache_dir is ``cache_dir`` (default: a fresh one in ``tmp``)."""
    from hydra import compose, initialize_config_dir

    register()
    jobs: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["family"], row["embed_method"], row["emb_info"], bool(row["similarity_ensemble"]),
               row.get("similarity_weight"), int(row["batch_size"]))  # fmt: skip
        jobs.setdefault(key, []).append(row)
    out = []
    conf = ROOT / "conf"
    with initialize_config_dir(str(conf), version_base=None), as_namesakes():
        for i, (key, members) in enumerate(jobs.items()):
            names = sorted({demo_task_of(r["task"]) for r in members})
            cfg = compose("config", overrides=[*overrides(*key), f"tasks.names=[{','.join(names)}]",
                                               f"paths.cache_dir={cache_dir or tmp / 'cache'}"])  # fmt: skip
            ours = {r["task"]: r for r in run_job(cfg, tmp / f"job{i}", "public_fixture")}
            for row in members:
                mine = ours[demo_task_of(row["task"])]
                out.append({**{k: row[k] for k in ("family", "embed_method", "emb_info", "similarity_ensemble",
                                                    "similarity_weight", "task", "task_type")},
                            "main_score_name": row["main_score_name"], "public": float(row["main_score"]),
                            "ours": float(mine["main_score"])})  # fmt: skip
    return out


def main() -> None:
    import argparse
    import tempfile

    import pandas as pd

    parser = argparse.ArgumentParser(description="our protocol=paper vs the public code's fixture scores")
    parser.add_argument("--family", default=None)
    parser.add_argument("--out", default=None, help="also write the table (csv)")
    args = parser.parse_args()
    rows = [r for r in scores() if args.family in (None, r["family"])]
    with tempfile.TemporaryDirectory(prefix="public-fixture-") as tmp:
        df = pd.DataFrame(run_ours(rows, Path(tmp)))
    df["Δ"] = df["ours"] - df["public"]
    df["emb"] = df.apply(lambda r: f"MoEE(sum) w={r.similarity_weight:g}" if r.similarity_ensemble
                         else {"MoEE": "MoEE(concat)"}.get(r.emb_info, r.emb_info), axis=1)  # fmt: skip
    if args.out:
        df.to_csv(args.out, index=False)
    print(markdown(df[["family", "embed_method", "emb", "task", "main_score_name", "public", "ours", "Δ"]].round(6)))
    print("\nmax |Δ| per task type and emb:\n")
    print(markdown(df.assign(absd=df["Δ"].abs()).pivot_table(index="task_type", columns="emb", values="absd",
                                                              aggfunc="max").round(6).reset_index()))


def markdown(df) -> str:
    """A DataFrame as a markdown table (pandas' to_markdown needs tabulate, which we do not depend on)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
