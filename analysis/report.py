"""One command: sweep dirs (or a W&B project) → every table and figure of the paper, ours beside the paper's.

    python -m analysis.report multirun/2026-11-23/10-00-00 [more dirs ...] --out report/
    python -m analysis.report --wandb my-entity/moee --out report/      (online, with an API key)

Writes into --out: rows.csv (every collected row), incomplete.csv, main_table.{md,tex,csv},
per_dataset.{md,tex,csv}, ablation.{md,tex,csv}, alpha_choice.{md,tex,csv} (best-on-test / auto / dev α),
alpha.csv + alpha_auto.csv + alpha_<model>_<prompt>.png,
prompt_robustness.{md,csv} + prompt_robustness_<model>_<task>.png (+ its matrix as CSV),
complementarity.{md,csv}, and README.md (what is where, incomplete jobs). Parts whose runs are absent are skipped.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from . import complementarity as comp
from . import figures, render, tables
from . import prompt_robustness as pr
from .collect import Collection, WandbUnavailable, collect, collect_wandb, merge


def _safe(s) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(s)).strip("-")


def _write(out: Path, name: str, frame: pd.DataFrame, csv: pd.DataFrame, caption: str) -> list[str]:
    (out / f"{name}.md").write_text(f"{caption}\n\n{render.markdown(frame)}", encoding="utf-8")
    (out / f"{name}.tex").write_text(render.latex(frame, caption, f"tab:{name}"), encoding="utf-8")
    csv.to_csv(out / f"{name}.csv", index=False)
    return [f"{name}.md", f"{name}.tex", f"{name}.csv"]


def _tasks_text(rows: pd.DataFrame) -> str:
    tasks = sorted(set(rows.task))
    main_set = rows.task_set.mode().iloc[0] if rows.task_set.notna().any() else "custom"  # the sweep's task set
    return ", ".join(tasks) if len(tasks) <= 4 else f"{main_set} ({len(tasks)} datasets)"


def build(col: Collection, out: Path, alpha="best", prompts=None) -> dict[str, list[str]]:
    """Write every output for the collected rows; returns {section: [file names]}."""
    out.mkdir(parents=True, exist_ok=True)
    rows, made = col.rows, {}
    rows.to_csv(out / "rows.csv", index=False)
    col.incomplete.to_csv(out / "incomplete.csv", index=False)
    dagger = "† = averages fewer datasets (or task types) than the most complete cell of its column."

    main = tables.main_long(rows, alpha, prompts)
    if not main.empty:
        which = ("the best α per model x prompt by Avg on the test scores themselves (optimistic, as in the paper; "
                 "auto α / dev α rows: chosen without test labels, per task)") if alpha == "best" else f"α = {alpha}"
        made["main table"] = _write(out, "main_table", tables.main_wide(main), main,
                                    f"Main results (x100; paper Tables 3-4 under ours; Δ = ours - paper). "
                                    f"MoEE_sum at {which}. {dagger}")
        per = tables.per_dataset(rows, alpha)
        made["per-dataset tables"] = _write(out, "per_dataset", tables.per_dataset_wide(per), per,
                                            "Per-dataset main scores (x100).")
    abl = tables.ablation(rows)
    if not abl.empty:
        made["ablation (Table 5)"] = _write(out, "ablation", tables.ablation_wide(abl), abl,
                                            "Pooling ablation (x100; paper Table 5: DeepSeekMoE-16B, PromptEOL, "
                                            f"mean of STS12-16). {dagger}")
    choice = tables.alpha_choice(rows, prompts)
    if not choice.empty:
        shown = choice.assign(**{c: choice[c].map(render.fmt) for c in choice.columns
                                 if c not in ("model", "prompt", "choice", "alpha", "n")})
        made["α choice"] = _write(out, "alpha_choice", shown, choice,
                                  "MoEE(sum) by how α is chosen (x100): the best α on the test scores (optimistic), "
                                  "the label-free auto α and the dev α (held-out labelled data), each per task "
                                  "(α: min / median / max over tasks).")
    alpha_tab = figures.alpha_table(rows)
    auto = figures.auto_alphas(rows)
    if not auto.empty:
        auto.to_csv(out / "alpha_auto.csv", index=False)
    if not alpha_tab.empty:
        alpha_tab.to_csv(out / "alpha.csv", index=False)
        files = ["alpha.csv"] + (["alpha_auto.csv"] if not auto.empty else [])
        for (model, label, prompt), _ in alpha_tab.groupby(["model", "label", "prompt"]):
            cell = rows[(rows.model == model) & (rows.prompt == prompt) & (rows.emb == "moee_sum")]
            # the default cell (MoEE_sum, protocol=paper) keeps the short name; other settings / protocols are named
            method, _, protocol = label.removesuffix("]").rpartition(" [") if label.endswith("]") else (label, "", "")
            extra = ("" if method == "MoEE_sum" else "_" + _safe(method)) + ("" if protocol in ("", "paper") else
                                                                            "_" + _safe(protocol))
            name = f"alpha_{_safe(model)}_{_safe(prompt)}{extra}.png"
            figures.plot_alpha(alpha_tab, model, label, prompt, _tasks_text(cell), out / name, auto)
            files.append(name)
        made["α curves"] = files
    robust = pr.robustness(rows)
    if robust:
        summary = pr.summary_table(robust)
        files = _write(out, "prompt_robustness", summary.assign(
            ours=summary.ours.map(render.fmt), paper=summary.paper.map(render.fmt),
            diff=summary["diff"].map(lambda x: render.fmt(x, signed=True))), summary,
            "Prompt robustness: mean Spearman correlation between the similarity scores two settings give the "
            "same STS pairs, over pairs of different prompts (paper: DeepSeekMoE-16B, STS12).")
        for r in robust:
            stem = f"prompt_robustness_{_safe(r.model)}_{_safe(r.task)}"
            pr.matrix_table(r).to_csv(out / f"{stem}.csv")
            figures.plot_prompt_heatmap(r, out / f"{stem}.png")
            files += [f"{stem}.csv", f"{stem}.png"]
        made["prompt robustness"] = files
    agree = comp.complementarity(rows)
    if not agree.empty:
        long = comp.with_paper(agree)
        agree.to_csv(out / "complementarity_per_dataset.csv", index=False)
        shown = long.assign(ours=long.ours.map(render.fmt), paper=long.paper.map(render.fmt),
                            diff=long["diff"].map(lambda x: render.fmt(x, signed=True)))
        made["RW-HS complementarity"] = _write(out, "complementarity", shown, long,
                                               "Agreement of the HS and RW clusterings of the same texts (mean "
                                               "over clustering datasets; paper: DeepSeekMoE-16B).") + [
            "complementarity_per_dataset.csv"]
    _index(col, out, made)
    return made


def _index(col: Collection, out: Path, made: dict) -> None:
    lines = ["# MoEE report", "", f"{len(col.rows)} result rows from {col.n_jobs} jobs"
             f" ({col.n_duplicates} older duplicate rows dropped). Scores x100.", ""]
    lines += [f"- **{k}**: " + ", ".join(f"[{f}]({f})" for f in v) for k, v in made.items()]
    lines += ["- **all rows**: [rows.csv](rows.csv)", ""]
    if len(col.incomplete):
        lines += [f"## Incomplete jobs ({len(col.incomplete)})", "", render.markdown(col.incomplete)]
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="*", type=Path, help="sweep dirs (multirun/<date>/<time>), job dirs or parents")
    ap.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read every run of this W&B project (online)")
    ap.add_argument("--out", type=Path, default=Path("report"), help="output dir (default: report/)")
    ap.add_argument("--alpha", default="best", help="MoEE_sum α in the main tables: best (default) or a value")
    ap.add_argument("--prompts", help="prompts of the main table, comma-separated (default: none,prompteol)")
    args = ap.parse_args(argv)
    if not args.dirs and not args.wandb:
        ap.error("give at least one sweep dir or --wandb ENTITY/PROJECT")
    try:
        parts = [collect(args.dirs)] if args.dirs else []
        if args.wandb:
            parts.append(collect_wandb(args.wandb))
    except (FileNotFoundError, WandbUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    col = merge(parts)
    for r in col.incomplete.itertuples():
        print(f"incomplete job {r.job_dir} ({r.job}): missing {r.missing}", file=sys.stderr)
    if col.rows.empty:
        print("error: no result rows found (results/<task>.json under the given dirs)", file=sys.stderr)
        return 2
    made = build(col, args.out, args.alpha, args.prompts.split(",") if args.prompts else None)
    print(f"{len(col.rows)} rows from {col.n_jobs} jobs; wrote {sum(map(len, made.values()))} files to "
          f"{args.out}/ ({', '.join(made)}); see {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
