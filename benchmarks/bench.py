"""Benchmarks for "one forward pass per model × prompt × dataset" (numbers and method: docs/benchmarks/, a page each).

    python benchmarks/bench.py                          # CPU, tiny models, medians of 3 repeats (~15 min, 2 cores)
    python benchmarks/bench.py --update docs/benchmarks/cpu-tiny.md   # same, and write the table into that page
    python benchmarks/bench.py --sections overhead,padding --repeats 5
    python benchmarks/bench.py --model olmoe-full --device cuda --dtype bfloat16            # GPU: OLMoE-1B-7B
    python benchmarks/bench.py --model olmoe-full --device cuda --quantization 4bit         #   architecture,
                                                                                            #   random weights
    python benchmarks/bench.py --alpha-selection        # α selection cost (benchmarks/alpha_selection.py)

Sections, one module each under benchmarks/ (its docstring says what it measures), each reported as a ratio.
The machine table (block bench:<model>-<device>[-<quantization>]: tiny-cpu in docs/benchmarks/cpu-tiny.md,
olmoe-full-cuda[-4bit] in docs/benchmarks/gpu.md), the default set:
  sweep     (sweep.py) the 13-job sweep hs + rw + moee_concat + moee_sum × 10 α versus one job: featurization and
            wall time, feature cache on / off / off with a reload per job (the public code). Tiny model only.
  overhead  (overhead.py) our extraction (hooks, pooling) versus a bare forward of the same padded batches.
  padding   (padding.py) padded tokens / real tokens with length-sorted batches, on a set of mixed lengths.
  memory    (memory.py) peak extra memory of our extraction versus output_hidden_states=True (+ router logits).
  throughput (overhead.py; olmoe-full) texts/s and tokens/s of our extraction.
Sections with a table of their own (block bench:<section>), not in the default set:
  scale     what a full paper reproduction costs: for each of the 19
            paper datasets, the texts mteb's evaluator embeds and their tokens, the scoring time of the real task
            class's evaluator at real size on synthetic embeddings of 1024/2048/3072 dims (benchmarks/scale.py,
            data from moee_exp.scoring.synthetic_tasks sized by mteb's descriptive statistics), the feature-cache bytes,
            an H100 roofline of the extraction; totals for +experiment=paper_main and alpha (~15 min, 1 core).
            python benchmarks/bench.py --sections scale --threads 1 --update docs/benchmarks/scale.md
  ourside   our side of a job (feature-cache reads, fusion, the embeddings handed to mteb)
            per text, against the reference implementation kept in benchmarks/ourside.py, on a TwitterURLCorpus-sized
            case at OLMoE's 3072 dims, and the main scores of 4 real-size datasets with both fusions
            (benchmarks/ourside.py; ~3 min).
  experts   extraction on CPU under each experts implementation of the installed transformers
            (eager, grouped_mm, batched_mm) on a random model of OLMoE-1B-7B's layer shapes (--experts-layers layers),
            next to a bare forward and the machine's limit (active FLOPs per token / measured matmul peak)
            (benchmarks/experts.py; ~5 min).
  fixed     the fixed cost of the default job `python run.py`, itemised: imports,
            config, task loading, mteb evaluation, feature cache reads, W&B init and finish (benchmarks/jobcost.py).
  alpha     an alpha sweep of moee_sum (--alpha-jobs) over 4 paper datasets at real size
            (synthetic data, tiny model) through run.py: Hydra's basic launcher (jobs one after the other) versus
            the joblib launcher (--alpha-workers) on one shared feature cache, without and with the extraction
            lock; wall time, CPU time, texts extracted, and the largest score difference (benchmarks/scale.py).
  cut       the alpha sweep's dominant cost cut: --alpha-jobs moee_sum jobs over one paper
            dataset per task type at real size (synthetic data, tiny model, features cached first and widened to
            OLMoE-1B-7B's dims, --cut-dims), one after the other, with datasets' lazy Column read row by row
            (MOEE_FAST_COLUMNS=0) and in one batch (moee_exp.scoring.fast_columns); wall time, scoring time, the largest
            score difference (~10 min; benchmarks/scale.py).

`--model tiny` uses the default tiny model for sweep/overhead/padding and a larger tiny OLMoE (hidden 512, 8 layers,
16 experts, texts of 300-600 tokens) for overhead and memory, built into a temp dir. `--model olmoe-full` builds
OLMoE-1B-7B's architecture from `OlmoeConfig()` defaults with intermediate_size=1024 (OLMoE-1B-7B-0924's; the
class default, 2048, would make a 13 B model) and random weights (no download; `--layers N` shrinks it for a smoke
test), with the tiny offline tokenizer, whose token ids all exist in OLMoE's vocabulary.

--update PAGE writes each table into the markdown page you name, between its `<!-- bench:<label> -->` markers
(the block of that label is replaced; a page without one gets it appended at its end). Name the page that holds
the section's block: docs/benchmarks/README.md lists which page holds which block, and each page's command names
its own page. Sections whose blocks live on different pages are run separately.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if "--threads" in sys.argv:  # before numpy/torch start their thread pools (sklearn's BLAS in the sweep too)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = sys.argv[sys.argv.index("--threads") + 1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    BIG_TINY,
    CLOCK,
    build_olmoe_full,
    clock,
    default_tiny_cfg,
    demo_texts,
    load_tiny,
    long_texts,
    mib,
    mixed_texts,
    publish,
    update_file,  # benchmarks.gpu_extraction imports it from here too
)


class Own(NamedTuple):
    """A section that publishes a table of its own (block bench:<name>); its module is imported when it runs."""

    module: str  # benchmarks.<module>
    run: Callable  # (module, args, tmp) -> results
    report: str  # the module's function: results -> markdown table
    what: Callable  # args -> what the numbers are, for the table's first line


OWN = {  # in run order
    "ourside": Own("ourside", lambda m, a, tmp: m.section(a), "report", lambda a: "; CPU time"),
    "experts": Own("experts", lambda m, a, tmp: m.section(a, clock), "report",
                   lambda a: f"; {CLOCK['name']}, medians of {a.repeats}"),
    "fixed": Own("jobcost", lambda m, a, tmp: m.measure(a.repeats, tmp), "report", lambda a: ""),
    "cut": Own("scale", lambda m, a, tmp: m.cut_section(a), "cut_report", lambda a: "; wall and CPU time of whole sweeps"),
    "alpha": Own("scale", lambda m, a, tmp: m.alpha_section(a), "alpha_report",
                 lambda a: "; wall and CPU time of whole sweeps"),
    "scale": Own("scale", lambda m, a, tmp: m.scale_section(a, clock), "report",
                 lambda a: f"; scoring times are {CLOCK['name']}"),
}
# The machine table's sections (one table, block bench:<model>-<device>[-<quantization>]) -> their module; rows in
# this order.
TABLE = {"sweep": "sweep", "overhead": "overhead", "throughput": "overhead", "padding": "padding", "memory": "memory"}


def run_table(args, sections: set, tmp: Path, res: dict) -> None:
    """The machine table's sections, sharing the models they load."""
    from benchmarks.memory import memory_cpu, memory_cuda
    from benchmarks.overhead import overhead
    from benchmarks.padding import padding_section

    if args.model == "tiny":
        if "sweep" in sections:
            from benchmarks.sweep import sweep_section

            print("sweep ...", flush=True)
            res["sweep"] = sweep_section(args, tmp)
        if sections & {"overhead", "padding"}:
            lm = load_tiny(None, default_tiny_cfg()["cache_dir"])
            if "overhead" in sections:
                print("overhead (default tiny) ...", flush=True)
                res["overhead"] = overhead(lm, demo_texts(), args.batch_size, args.repeats)
            if "padding" in sections:
                res["padding"] = padding_section(lm, args.batch_size)
        if sections & {"overhead", "memory"}:
            from moee_exp.features.tiny import ensure_tiny_model

            big_dir = ensure_tiny_model(BIG_TINY, tmp / "models")
            if "overhead" in sections:
                print("overhead (larger tiny) ...", flush=True)
                big = load_tiny(BIG_TINY, tmp / "models")
                res["overhead_big"] = overhead(big, long_texts(16), 8, args.repeats)
                del big
            if "memory" in sections:
                print("memory ...", flush=True)
                res["memory"] = memory_cpu(big_dir, args)
                res["memory_setup"] = (
                    f"larger tiny OLMoE, {args.mem_texts} texts of 300-600 tokens, batches of {args.mem_batch_size}"
                )
    else:
        lm = build_olmoe_full(args, tmp)
        dev = lm.device
        n_layers = len(lm.routers)
        res["setup"] = (
            f"{n_layers} MoE layers, {args.dtype}, quantization {args.quantization}, batches of {args.batch_size}"
        )
        if "overhead" in sections or "throughput" in sections:
            print("overhead ...", flush=True)
            res["overhead"] = overhead(lm, mixed_texts(args.texts), args.batch_size, args.repeats)
        if "padding" in sections:
            res["padding"] = padding_section(lm, args.batch_size)
        if "memory" in sections and dev.type == "cuda":
            res["memory"] = memory_cuda(lm, args)
            res["memory_setup"] = (
                f"OLMoE-1B-7B architecture, {args.dtype}/{args.quantization}, {args.mem_texts} texts of "
                f"300-600 tokens, batches of {args.mem_batch_size}; weights {mib(res['memory']['weights_bytes'])}"
            )


def report(res: dict, args) -> str:
    """The machine table: a header, then each section module's rows (each writes only what res holds)."""
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {res['machine']}; medians of {args.repeats} repeats "
        f"(overhead: of 9); timings are {CLOCK['name']} except where it says wall. Command: `{res['command']}`",
        "",
        "| # | measure | result | target |",
        "|---|---|---|---|",
    ]
    for module in dict.fromkeys(TABLE.values()):
        lines += importlib.import_module(f"benchmarks.{module}").rows(res, args)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("tiny", "olmoe-full"), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--quantization", choices=("none", "4bit", "8bit"), default="none")
    ap.add_argument("--layers", type=int, default=0, help="olmoe-full: fewer layers (smoke test); 0 = OLMoE's 16")
    ap.add_argument("--sections", default="sweep,overhead,padding,memory")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch/BLAS threads (0: their default)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--mem-texts", type=int, default=32)
    ap.add_argument("--texts", type=int, default=256, help="olmoe-full: texts for overhead/throughput")
    ap.add_argument("--mem-batch-size", type=int, default=16)
    ap.add_argument("--scale-dims", default="1024,2048,3072", help="scale: embedding dims to time the evaluators at")
    ap.add_argument("--scale-tasks", default="", help="scale: only these paper datasets (comma-separated)")
    ap.add_argument("--alpha-jobs", type=int, default=6, help="alpha: jobs of the sweep (alpha = 0.1, 0.2, ...)")
    ap.add_argument("--cut-dims", choices=("olmoe", "tiny"), default="olmoe",
                    help="cut: score features at OLMoE-1B-7B's dims (the tiny model's, widened) or the tiny model's")
    ap.add_argument("--alpha-workers", type=int, default=2, help="alpha: joblib workers of the parallel sweep")
    ap.add_argument("--experts-layers", type=int, default=2, help="experts: layers of the OLMoE-shaped model")
    ap.add_argument("--experts-batch", type=lambda v: tuple(int(x) for x in v.split(",")), default=(8, 128),
                    help="experts: texts,tokens of the padded batch")
    ap.add_argument("--experts-small-tokens", type=int, default=8, help="experts: tokens of the batch batched_mm runs on")
    ap.add_argument("--update", type=Path, metavar="PAGE",
                    help="write the tables into this page, between their bench markers (docs/benchmarks/)")
    ap.add_argument("--json", type=Path, help="write all measurements as JSON")
    ap.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    ap.add_argument("--_model-dir", dest="model_dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        from benchmarks.memory import memory_child

        return memory_child(args.model_dir, args.memory_child, args.mem_texts, args.mem_batch_size)
    sections = set(args.sections.split(","))
    if sections - OWN.keys() - TABLE.keys():
        ap.error(f"unknown section(s) {', '.join(sorted(sections - OWN.keys() - TABLE.keys()))}; "
                 f"choose from {', '.join([*TABLE, *OWN])}")

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.threads == 1 and args.device == "cpu":
        CLOCK.update(fn=time.process_time, name="CPU time")
    logging.basicConfig(level=logging.WARNING)
    for name in ("moee_exp", "transformers", "mteb"):
        logging.getLogger(name).setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="moee-bench-"))
    res = {
        "machine": f"{torch.cuda.get_device_name() if 'cuda' in args.device else 'CPU'}, "
        f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)",
        "command": "python benchmarks/bench.py " + " ".join(
            a for i, a in enumerate(sys.argv[1:]) if not a.startswith(("--update", "--json"))
            and sys.argv[i] not in ("--update", "--json")),  # where the results went is not part of the command
    }
    try:
        for name, own in OWN.items():
            if name in sections:
                print(f"{name} ...", flush=True)
                module = importlib.import_module(f"benchmarks.{own.module}")
                res[name] = own.run(module, args, tmp)
                publish(args, res, name, own.what(args), getattr(module, own.report)(res[name]))
        if not sections & TABLE.keys():
            return
        run_table(args, sections, tmp, res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = report(res, args)
    print("\n" + table)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if args.update:
        label = f"{args.model}-{args.device.split(':')[0]}"
        label += f"-{args.quantization}" if args.quantization != "none" else ""
        update_file(args.update, label, table)
        print(f"\nwritten to {args.update} (block bench:{label})")


if __name__ == "__main__":
    if "--alpha-selection" in sys.argv:
        from benchmarks.alpha_selection import main as alpha_selection_main

        alpha_selection_main()
    else:
        main()
