"""Scale model of a full paper reproduction (the `scale` section of benchmarks/bench.py; docs/benchmarks/scale.md).

Per paper dataset (conf/tasks/paper.yaml): the texts mteb's own evaluator encodes and their characters, counted by
running the real task class (``mteb.get_task``) on synthetic data of the real sizes (``moee_exp.scoring.synthetic_tasks``,
sizes and average text lengths from mteb's descriptive statistics); the scoring time of that evaluator at real size on
synthetic embeddings of 1024 / 2048 / 3072 dims (encoding time excluded); the feature-cache bytes in
``moee_exp.features.cache``'s own format (measured on a written shard); and a roofline estimate of the extraction time of
each paper model in bf16 on one H100 (assumptions in ``ROOFLINE``). Totals for an experiment config
(conf/experiment/*.yaml) follow from its sweep grid.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
DIMS = (1024, 2048, 3072)

# The paper's models (paper.md; conf/model/*.yaml comments; the models' config.json on the hub). Parameters in
# billions: `active` are the non-embedding parameters a token goes through (attention + router + its experts +
# shared experts), `total` everything that is read from memory in a forward pass.
MODELS = {
    "olmoe": dict(name="OLMoE-1B-7B", hidden=2048, layers=16, moe_layers=16, experts=64, top_k=8, expert_inter=1024,
                  shared_inter=0, dense_inter=0, total=6.9, experts_impl="grouped_mm"),
    "qwen_moe": dict(name="Qwen1.5-MoE-A2.7B", hidden=2048, layers=24, moe_layers=24, experts=60, top_k=4,
                     expert_inter=1408, shared_inter=5632, dense_inter=0, total=14.3, experts_impl="grouped_mm"),
    "deepseek_moe": dict(name="DeepSeekMoE-16B", hidden=2048, layers=28, moe_layers=27, experts=64, top_k=6,
                         expert_inter=1408, shared_inter=2 * 1408, dense_inter=10944, total=16.4,
                         experts_impl="eager"),  # our own class (moee_exp/features/models/deepseek_moe.py) loops over experts
}

# Roofline of one forward pass over a batch on one H100 SXM in bf16: time = max(FLOPs / (peak * mfu), weight bytes /
# (HBM bandwidth * bw_eff)) + eager ops * op_overhead. transformers' MoE blocks (e.g. OlmoeExperts.forward) loop in
# Python over the experts hit by the batch: ~op_per_expert eager ops per expert per layer, each costing the host
# ~op_overhead to dispatch; with ~1000 tokens per batch every expert is hit, so this term dominates for short texts.
# That is the `eager` experts implementation. transformers >= 5 runs OLMoE's and Qwen2-MoE's experts with
# `grouped_mm` by default (model.experts_implementation=auto keeps it; docs/benchmarks/experts.md):
# a fixed ~20 ops per MoE layer (sort, histc, cumsum, two grouped matmuls, gate, weighting, unpermute), whatever the
# number of experts hit (ops_per_grouped_layer, counted in transformers.integrations.moe.grouped_mm_experts_forward).
ROOFLINE = dict(peak_flops=989e12, mfu=0.30, hbm=3.35e12, bw_eff=0.8, op_overhead=10e-6, ops_per_expert=9,
                ops_per_grouped_layer=20, ops_per_layer=25, batch_size=32, padding=1.04, chars_per_token=4.0,
                max_length=512)


def paper_tasks() -> list[str]:
    return list(yaml.safe_load((ROOT / "conf/tasks/paper.yaml").read_text())["names"])


def experiment_grid(name: str) -> dict:
    """{model: [...], prompt: [...], emb: [...], alpha: [...]} from conf/experiment/<name>.yaml's sweep."""
    spec = yaml.safe_load((ROOT / f"conf/experiment/{name}.yaml").read_text())
    params = {k: str(v).split(",") for k, v in spec["hydra"]["sweeper"]["params"].items()}
    emb = next((d["override /emb"] for d in spec["defaults"] if isinstance(d, dict) and "override /emb" in d), None)
    alphas = next((v for k, v in params.items() if k.endswith("alpha")), ["1.0"])
    return {"model": params["model"], "prompt": params["prompt"], "emb": params.get("emb", [emb]), "alpha": alphas}


def emb_dim(model: dict, kind: str) -> int:
    rw = model["moe_layers"] * model["experts"]
    return {"hs": model["hidden"], "rw": rw}.get(kind, model["hidden"] + rw)


# -- counting texts and timing the evaluators ------------------------------------------------------------------------


def make_encoder(dim: int, clock):
    """An mteb encoder returning hashed bag-of-words vectors (texts of a label share words, so evaluators see
    structure, as with real embeddings); it counts what it is given and how long it takes, to subtract."""
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta, ScoringFunction

    class Synthetic(AbsEncoder):
        def __init__(self):
            self.mteb_model_meta = ModelMeta.create_empty({
                "name": "bench/synthetic", "revision": "1", "similarity_fn_name": ScoringFunction.COSINE,
                "framework": ["PyTorch"], "use_instructions": False})
            self.vectors, self.seconds, self.texts = {}, 0.0, []

        def vec(self, word):
            v = self.vectors.get(word)
            if v is None:
                v = self.vectors[word] = np.random.default_rng(zlib.crc32(word.encode())).standard_normal(dim)
            return v

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            t = clock()
            texts = [x for batch in inputs for x in batch["text"]]
            self.texts += texts
            out = np.zeros((len(texts), dim), np.float32)
            for i, text in enumerate(texts):
                words = text.split()[:48]
                if words:
                    out[i] = np.sum([self.vec(w) for w in words], axis=0)
            self.seconds += clock() - t
            return out

    return Synthetic()


def score_task(task, dim: int, clock) -> dict:
    import mteb

    enc = make_encoder(dim, clock)
    t = clock()
    mteb.evaluate(enc, task, cache=None, co2_tracker=False, encode_kwargs={"batch_size": 1024},
                  show_progress_bar=False)
    return {"seconds": clock() - t - enc.seconds, "texts": enc.texts}


def stats_unique_texts(task) -> int | None:
    """Distinct texts of the evaluated split by mteb's descriptive statistics (sum over its text fields), or None
    for Classification, whose evaluator also embeds a sample of the train split (counted by the encoder).

    Synthetic texts are all distinct, real ones are not (e.g. TwentyNewsgroupsClustering: 59,545 texts in 10
    overlapping sets, 5,242 distinct); the feature cache extracts and stores each distinct text once.
    """
    if task.metadata.type == "Classification":
        return None
    split = "test" if "test" in task.metadata.eval_splits else task.metadata.eval_splits[0]
    stats = (task.metadata.descriptive_stats or {}).get(split) or {}
    fields = [v for k, v in stats.items() if k.endswith("statistics") and isinstance(v, dict) and "unique_texts" in v]
    if task.metadata.type == "Summarization":  # the source texts are not embedded, only the summaries
        fields = [stats[k] for k in stats if "summaries" in k and isinstance(stats[k], dict)]
    return sum(int(f["unique_texts"]) for f in fields) or None


def text_stats(texts: list[str], template: str, real_unique: int | None = None) -> dict:
    extra = len(template.replace("{text}", ""))
    rf = ROOFLINE
    tokens = [min(rf["max_length"], math.ceil((len(t) + extra) / rf["chars_per_token"])) for t in texts]
    unique = min(len(set(texts)), real_unique or len(texts))
    return {"texts": len(texts), "unique": unique, "chars": sum(map(len, texts)), "tokens": sum(tokens),
            "tokens_unique": int(sum(tokens) * unique / max(len(texts), 1))}


# -- cache bytes ------------------------------------------------------------------------------------------------------


def cache_record_bytes() -> dict:
    """Bytes per text and per shard of each cached feature, measured on shards written by moee_exp.features.cache."""
    from moee_exp.features.cache import Namespace, text_key
    from moee_exp.features.featurize import TRUNCATED

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m, spec in MODELS.items():
            shapes = {"hs": (spec["hidden"],), "rw": (spec["moe_layers"], spec["experts"]), TRUNCATED: ()}
            per_text, header = 0.0, 0.0
            for feat, shape in shapes.items():
                sizes = []
                for n in (1, 101):
                    ns = Namespace(Path(tmp) / f"{m}-{feat}-{n}", {"m": m})
                    vals = np.zeros((n, *shape), bool if feat == TRUNCATED else np.float32)
                    ns.put([text_key(f"{m}{i}") for i in range(n)], feat, vals)
                    sizes.append(ns.nbytes())
                per_text += (sizes[1] - sizes[0]) / 100
                header += sizes[0] - (sizes[1] - sizes[0]) / 100
            out[m] = {"per_text": per_text, "per_shard": header}
    return out


# -- extraction roofline ----------------------------------------------------------------------------------------------


def flops_per_token(m: dict, context: float) -> float:
    d = m["hidden"]
    attn = 4 * d * d  # q, k, v, o (full multi-head attention in all three)
    moe = m["top_k"] * 3 * d * m["expert_inter"] + 3 * d * m["shared_inter"] + d * m["experts"]
    dense = 3 * d * m["dense_inter"]
    params = m["layers"] * attn + m["moe_layers"] * moe + (m["layers"] - m["moe_layers"]) * dense
    return 2 * params + 4 * m["layers"] * d * context  # + QK^T and AV over the (causal) context


def extraction_seconds(m: dict, texts: int, tokens: int) -> float:
    rf = ROOFLINE
    if not texts:
        return 0.0
    batches = math.ceil(texts / rf["batch_size"])
    tokens_padded = tokens * rf["padding"]
    avg_len = tokens / texts
    compute = tokens_padded * flops_per_token(m, avg_len / 2) / (rf["peak_flops"] * rf["mfu"])
    memory = batches * m["total"] * 1e9 * 2 / (rf["hbm"] * rf["bw_eff"])
    per_moe_layer = rf["ops_per_grouped_layer"] if m["experts_impl"] == "grouped_mm" else m["experts"] * rf["ops_per_expert"]
    ops = batches * (m["layers"] * rf["ops_per_layer"] + m["moe_layers"] * per_moe_layer)
    per_batch = [compute / batches, memory / batches]
    return batches * max(per_batch) + ops * rf["op_overhead"]


# -- the section ------------------------------------------------------------------------------------------------------


def scale_section(args, clock, log=print) -> dict:
    import datasets

    from moee_exp.features.prompts import TEMPLATES
    from moee_exp.scoring import fast_columns
    from moee_exp.scoring.synthetic_tasks import synthetic_task

    datasets.disable_progress_bars()
    fast_columns.install()  # as the runner scores (MOEE_FAST_COLUMNS=0: datasets' Column row by row)
    names = paper_tasks()
    dims = tuple(int(d) for d in str(args.scale_dims).split(","))
    only = set(args.scale_tasks.split(",")) if args.scale_tasks else None
    warm = synthetic_task("STS12", "small")
    for dim in dims:  # imports and lazy initialisation of the evaluators, paid once per process
        score_task(warm, dim, clock)
    rows = {}
    for name in names:
        if only and name not in only:
            continue
        task = synthetic_task(name, "real")
        t = time.perf_counter()
        task.load_data()
        row = {"type": task.metadata.type, "generate_s": time.perf_counter() - t, "scoring_s": {}}
        for dim in dims:
            res = score_task(task, dim, clock)  # the data stay loaded (mteb unloads only what it loaded)
            row["scoring_s"][dim] = res["seconds"]
        fast_columns.uninstall()  # the same scoring with datasets' Column read row by row: the cut's ratio
        row["rowwise_s"] = score_task(task, max(dims), clock)["seconds"]
        fast_columns.install()
        real_unique = stats_unique_texts(task)
        for prompt in ("none", "prompteol"):
            row[prompt] = text_stats(res["texts"], "{text}" if prompt == "none" else TEMPLATES["prompteol"],
                                     real_unique)
        task.unload_data()
        rows[name] = row
        log(f"  scale {name}: {row['none']['texts']} texts, scoring "
            + ", ".join(f"{d}d {s:.1f}s" for d, s in row["scoring_s"].items()), flush=True)
    return {"tasks": rows, "dims": list(dims), "cache": cache_record_bytes(), "roofline": ROOFLINE, "models": MODELS,
            "grids": {e: experiment_grid(e) for e in ("paper_main", "alpha")}}


def scoring_at(row: dict, dim: int) -> float:
    """Scoring seconds at ``dim``, linear between the measured dims (evaluators are linear in d at fixed n)."""
    ds = sorted(int(d) for d in row["scoring_s"])
    ys = [row["scoring_s"][d] if d in row["scoring_s"] else row["scoring_s"][str(d)] for d in ds]
    return float(np.interp(dim, ds, ys, left=None, right=None)) if dim <= ds[-1] else (
        ys[-1] + (ys[-1] - ys[-2]) / (ds[-1] - ds[-2]) * (dim - ds[-1]))


def totals(res: dict, experiment: str) -> dict:
    grid = res["grids"][experiment]
    tasks = res["tasks"]
    gpu = cpu = disk = 0.0
    jobs = 0
    for model in grid["model"]:
        m = MODELS[model]
        for prompt in grid["prompt"]:
            texts = sum(r[prompt]["unique"] for r in tasks.values())
            tokens = sum(r[prompt]["tokens_unique"] for r in tasks.values())
            gpu += extraction_seconds(m, texts, tokens)  # once per model x prompt: the cache serves the rest
            disk += texts * res["cache"][model]["per_text"]
            for kind in grid["emb"]:
                for _ in grid["alpha"] if kind == "moee_sum" and len(grid["alpha"]) > 1 else [None]:
                    jobs += 1
                    cpu += sum(scoring_at(r, emb_dim(m, kind)) for r in tasks.values())
    return {"jobs": jobs, "gpu_h": gpu / 3600, "cpu_h": cpu / 3600, "disk_gb": disk / 1e9}


def report(res: dict) -> str:
    tasks, dims = res["tasks"], res["dims"]
    olmoe = MODELS["olmoe"]
    top = max(dims)
    head = " | ".join(f"scoring {d}d (s)" for d in dims) + f" | {top}d, Column row by row (s)"
    lines = [
        f"| dataset | type | texts embedded (distinct) | tokens, no prompt / PromptEOL | {head} | cache, OLMoE, "
        "one prompt | extraction, OLMoE bf16 H100 (roofline) |",
        "|---|---|---|---|" + "---|" * (len(dims) + 1) + "---|---|",
    ]
    sums = {"texts": 0, "unique": 0, "tok": 0, "tok_p": 0, "score": [0.0] * (len(dims) + 1), "cache": 0.0, "gpu": 0.0}
    for name, r in tasks.items():
        n, p = r["none"], r["prompteol"]
        cache = n["unique"] * res["cache"]["olmoe"]["per_text"]
        gpu = extraction_seconds(olmoe, p["unique"], p["tokens_unique"])
        scores = [r["scoring_s"][d] if d in r["scoring_s"] else r["scoring_s"][str(d)] for d in dims]
        scores.append(r.get("rowwise_s", float("nan")))
        lines.append(f"| {name} | {r['type']} | {n['texts']:,} ({n['unique']:,}) | {n['tokens']:,} / {p['tokens']:,} | "
                     + " | ".join(f"{s:.2f}" for s in scores) + f" | {cache / 1e6:.0f} MB | {gpu:.0f} s |")
        sums["texts"] += n["texts"]
        sums["unique"] += n["unique"]
        sums["tok"] += n["tokens"]
        sums["tok_p"] += p["tokens"]
        sums["score"] = [a + b for a, b in zip(sums["score"], scores)]
        sums["cache"] += cache
        sums["gpu"] += gpu
    lines.append(f"| **all {len(tasks)}** | | **{sums['texts']:,} ({sums['unique']:,})** | **{sums['tok']:,} / "
                 f"{sums['tok_p']:,}** | " + " | ".join(f"**{s:.0f}**" for s in sums["score"])
                 + f" | **{sums['cache'] / 1e9:.2f} GB** | **{sums['gpu'] / 60:.0f} min** |")
    lines += ["", "| experiment | jobs | GPU hours (extraction, H100, roofline) | CPU hours (mteb scoring, 1 core) | "
              "disk (feature cache) |", "|---|---|---|---|---|"]
    for exp in ("paper_main", "alpha"):
        t = totals(res, exp)
        lines.append(f"| `+experiment={exp}` | {t['jobs']} | {t['gpu_h']:.1f} | {t['cpu_h']:.2f} | "
                     f"{t['disk_gb']:.1f} GB |")
    a, b = totals(res, "paper_main"), totals(res, "alpha")
    lines.append(f"| both, one shared cache | {a['jobs'] + b['jobs']} | {a['gpu_h']:.1f} | "
                 f"{a['cpu_h'] + b['cpu_h']:.2f} | {a['disk_gb']:.1f} GB |")
    after, before = sums["score"][len(dims) - 1], sums["score"][-1]
    lines += ["", f"mteb's scoring of the {len(tasks)} datasets at {top} dims (OLMoE's MoEE: every job of the α grid), "
              f"measured both ways in this run: **{before:.0f} s** with datasets' Column read row by row, "
              f"**{after:.0f} s** with `moee_exp.scoring.fast_columns`: **{before / after:.2f}x**."]
    return "\n".join(lines)


# -- the alpha sweep: sequential, versus parallel jobs sharing the feature cache -----------------------------------

ALPHA_TASKS = os.environ.get("MOEE_BENCH_ALPHA_TASKS", "[EmotionClassification,TwitterSemEval2015,STS12,AskUbuntuDupQuestions]")


def run_sweep(tmp: Path, tag: str, alphas: str, extra: list[str], tasks: str = ALPHA_TASKS, cache_tag: str | None = None,
              env: dict | None = None) -> dict:
    """One Hydra multirun of run.py (its own cache dir unless ``cache_tag`` names a shared one); wall time, CPU time
    of every process, texts extracted, the scores and the summed per-dataset scoring time of the rows."""
    import os
    import re
    import resource
    import subprocess
    import sys

    sweep, cache = tmp / f"sweep-{tag}", tmp / f"features-{cache_tag or tag}"
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", "emb=moee_sum", f"weights.alpha={alphas}",
           f"tasks.names={tasks}", "tasks.data=synthetic", "tasks.synthetic.size=real", "logger=none",
           "progress=false", f"cache.dir={cache}", f"hydra.sweep.dir={sweep}", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"sweep {tag} failed:\n{proc.stderr[-3000:]}")
    extracted = sum(int(n) for log in sweep.glob("*/*.log")
                    for n in re.findall(r"from the feature cache, (\d+) extracted", log.read_text()))
    scores, scoring = {}, 0.0
    for path in sweep.glob("*/results/*.json"):
        import json

        row = json.loads(path.read_text())
        scores[f"{row['alpha']}/{row['task']}"] = row["main_score"]
        scoring += row["eval_time_s"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "extracted": extracted, "scores": scores, "scoring": scoring}


def alpha_section(args, log=print) -> dict:
    """The alpha sweep's jobs one after the other (Hydra's basic launcher, the default) versus run at once by the
    joblib launcher on one shared cache, with and without the extraction lock; scores compared."""
    tmp = Path(tempfile.mkdtemp(prefix="moee-alpha-"))
    alphas = ",".join(f"{a / 10:g}" for a in range(1, args.alpha_jobs + 1))
    par = ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={args.alpha_workers}"]
    out = {"jobs": args.alpha_jobs, "workers": args.alpha_workers, "tasks": ALPHA_TASKS}
    for tag, extra in (("sequential", []), ("parallel_nolock", [*par, "cache.lock=false"]), ("parallel", par)):
        log(f"  alpha sweep: {tag} ...", flush=True)
        out[tag] = run_sweep(tmp, tag, alphas, extra)
        log(f"    wall {out[tag]['wall']:.0f} s, CPU {out[tag]['cpu']:.0f} s, {out[tag]['extracted']} texts extracted")
    ref = out["sequential"]["scores"]
    out["max_score_diff"] = max(abs(out[k]["scores"][key] - v) for k in ("parallel", "parallel_nolock")
                                for key, v in ref.items())
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return out


def alpha_report(res: dict) -> str:
    s, n, p = res["sequential"], res["parallel_nolock"], res["parallel"]
    return "\n".join([
        "| measure | sequential (basic launcher) | joblib, no lock | joblib + lock (this change) | ratio |",
        "|---|---|---|---|---|",
        f"| wall time of the sweep | {s['wall']:.0f} s | {n['wall']:.0f} s | {p['wall']:.0f} s | "
        f"**{s['wall'] / p['wall']:.2f}x** (sequential / joblib + lock) |",
        f"| CPU time of all processes | {s['cpu']:.0f} s | {n['cpu']:.0f} s | {p['cpu']:.0f} s | "
        f"{n['cpu'] / p['cpu']:.2f}x (no lock / lock) |",
        f"| texts extracted (forward passes) | {s['extracted']:,} | {n['extracted']:,} | {p['extracted']:,} | "
        f"**{n['extracted'] / max(p['extracted'], 1):.2f}x** (no lock / lock) |",
        f"| largest score difference to the sequential sweep | 0 | {res['max_score_diff']:.1e} (both) | | |",
    ])


# -- the alpha sweep's dominant cost, before and after moee_exp.scoring.fast_columns ---------------------------------------

CUT_TASKS = os.environ.get("MOEE_BENCH_CUT_TASKS", "[EmotionClassification,TwentyNewsgroupsClustering,"
                           "TwitterSemEval2015,AskUbuntuDupQuestions,STS12,SummEval]")  # one per task type, real size


def cut_section(args, log=print) -> dict:
    """The alpha sweep after paper_main (features cached): its jobs one after the other (Hydra's basic launcher),
    with datasets' Column read row by row (MOEE_FAST_COLUMNS=0, before) and in one batch (after); scores compared."""
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix="moee-cut-"))
    alphas = ",".join(f"{a / 10:g}" for a in range(1, args.alpha_jobs + 1))
    out = {"jobs": args.alpha_jobs, "tasks": CUT_TASKS}
    log("  filling the feature cache (one job, untimed) ...", flush=True)
    run_sweep(tmp, "fill", "1", [], CUT_TASKS, cache_tag="shared")
    if args.cut_dims == "olmoe":
        out["widened"] = widen_cache(tmp / "features-shared", MODELS["olmoe"])
        log(f"  features widened to OLMoE-1B-7B's dims: {out['widened']}", flush=True)
    for tag, flag in (("before", "0"), ("after", "1")):
        log(f"  alpha sweep, {tag} ...", flush=True)
        out[tag] = run_sweep(tmp, tag, alphas, [], CUT_TASKS, cache_tag="shared", env={"MOEE_FAST_COLUMNS": flag})
        log(f"    wall {out[tag]['wall']:.0f} s, scoring {out[tag]['scoring']:.0f} s")
    ref, got = out["before"]["scores"], out["after"]["scores"]
    out["n_scores"] = len(ref)
    out["max_score_diff"] = max(abs(got[k] - v) for k, v in ref.items()) if ref.keys() == got.keys() else float("nan")
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def widen_cache(root: Path, model: dict, seed: int = 0) -> dict:
    """Rewrite every cached HS / RW of the tiny model at a real model's dims (HS: hidden; RW: moe_layers x experts),
    as fixed random projections of the tiny features (so texts keep their structure): the real runner then reads,
    fuses and scores embeddings of the real size (OLMoE's MoEE: 3072 dims) without a real model's extraction."""
    import json
    import shutil

    from moee_exp.features.cache import Namespace

    rng = np.random.default_rng(seed)
    shapes = {"hs": (model["hidden"],), "rw": (model["moe_layers"], model["experts"])}
    for folder in sorted(p for p in root.iterdir() if (p / "meta.json").exists()):
        identity = json.loads((folder / "meta.json").read_text())
        old = Namespace(folder, identity)
        for feature, shape in shapes.items():
            old.refresh(feature)
            keys = list(old._index[feature])
            values = old.get(keys, feature).reshape(len(keys), -1).astype(np.float64)
            wide = values @ rng.standard_normal((values.shape[1], int(np.prod(shape))))
            shutil.rmtree(folder / feature)
            Namespace(folder, identity).put(keys, feature, wide.reshape(len(keys), *shape).astype(np.float32))
    hs, (layers, experts) = shapes["hs"][0], shapes["rw"]
    return {"hs": hs, "rw": f"{layers} x {experts}", "moee": hs + layers * experts}


def cut_report(res: dict) -> str:
    b, a, n = res["before"], res["after"], res["jobs"]
    w = res.get("widened")
    dims = (f"features at OLMoE-1B-7B's dims (HS {w['hs']}, RW {w['rw']}: MoEE {w['moee']} dims), random projections "
            "of the tiny model's") if w else "the tiny model's features (MoEE 96 dims)"
    return f"{n} jobs over {res['tasks']} at real size; {dims}.\n\n" + "\n".join([
        "| measure | before (datasets' Column row by row) | after (`moee_exp.scoring.fast_columns`) | ratio |",
        "|---|---|---|---|",
        f"| wall time of the sweep ({n} jobs, one process) | {b['wall']:.0f} s | {a['wall']:.0f} s | "
        f"**{b['wall'] / a['wall']:.2f}x** |",
        f"| CPU time of the sweep | {b['cpu']:.0f} s | {a['cpu']:.0f} s | {b['cpu'] / a['cpu']:.2f}x |",
        f"| scoring, summed over the {len(b['scores'])} result rows | {b['scoring']:.0f} s | {a['scoring']:.0f} s | "
        f"**{b['scoring'] / a['scoring']:.2f}x** |",
        f"| texts extracted (features cached before) | {b['extracted']:,} | {a['extracted']:,} | |",
        f"| largest score difference ({res['n_scores']} scores) | | {res['max_score_diff']:.1e} | |",
    ])
