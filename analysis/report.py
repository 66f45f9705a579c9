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


def _write(out: Path, name: str, frame: pd.DataFrame, csv: pd.DataFrame, caption: str,
           notes: list[str] = ()) -> list[str]:
    """The table as Markdown, LaTeX and CSV; ``notes`` (footnotes) go under the Markdown table and into the caption."""
    notes = [n for n in notes if n]
    caption = " ".join([caption, *notes])
    (out / f"{name}.md").write_text(f"{caption}\n\n{render.markdown(frame)}", encoding="utf-8")
    (out / f"{name}.tex").write_text(render.latex(frame, caption.replace("`", ""), f"tab:{name}"), encoding="utf-8")
    csv.to_csv(out / f"{name}.csv", index=False)
    return [f"{name}.md", f"{name}.tex", f"{name}.csv"]


SYNTHETIC_NOTE = ("Rows marked synthetic are dry runs on generated data (tasks.data=synthetic): their scores mean "
                  "nothing, and they are never compared with the paper (no paper number, no Δ).")


def _tasks_text(rows: pd.DataFrame) -> str:
    """The datasets of a figure and where their data came from (real, or generated: a dry run)."""
    tasks = sorted(set(rows.task))
    main_set = rows.task_set.mode().iloc[0] if rows.task_set.notna().any() else "custom"  # the sweep's task set
    data = set(rows.task_data.fillna("real")) if "task_data" in rows else {"real"}
    source = ("synthetic data (a dry run: scores mean nothing)" if data == {"synthetic"} else "real data"
              if data == {"real"} else "real and synthetic data")
    return (", ".join(tasks) if len(tasks) <= 4 else f"{main_set} ({len(tasks)} datasets)") + f"; {source}"


def _note(table: str, rows: pd.DataFrame, notes: list[str], show: bool = True) -> str:
    """The versions note of one table's rows (tables.versions_note), printed (unless ``show`` is false: a table of the
    same rows as one already reported) and kept for the README."""
    line = tables.versions_note(rows)
    if line and show:
        print(f"{table}: {line}")
        notes.append(f"{table}: {line}")
    return line


def _synthetic_note(rows: pd.DataFrame) -> str:
    return SYNTHETIC_NOTE if "task_data" in rows and (rows.task_data == "synthetic").any() else ""


def build(col: Collection, out: Path, alpha="best", prompts=None) -> dict[str, list[str]]:
    """Write every output for the collected rows; returns {section: [file names]}."""
    out.mkdir(parents=True, exist_ok=True)
    rows, made, notes = col.rows, {}, []
    rows.to_csv(out / "rows.csv", index=False)
    col.incomplete.to_csv(out / "incomplete.csv", index=False)
    dagger = "† = averages fewer datasets (or task types) than the most complete cell of its column."
    synthetic = _synthetic_note(rows)

    main = tables.main_long(rows, alpha, prompts)
    if not main.empty:
        which = ("the best α per model x prompt by Avg on the test scores themselves (optimistic, as in the paper; "
                 "auto α / dev α rows: chosen without test labels, per task)") if alpha == "best" else f"α = {alpha}"
        used = tables.main_rows(rows, alpha, prompts)
        version = _note("main table", used, notes)
        made["main table"] = _write(out, "main_table", tables.main_wide(main), main,
                                    f"Main results (x100; the paper's Tables 3-4 under ours, as \"{tables.REPORTED}\"; "
                                    f"Δ = ours - paper). MoEE_sum at {which}. {dagger}",
                                    [tables.metric_note(main), _synthetic_note(used), version])
        per = tables.per_dataset(rows, alpha)
        made["per-dataset tables"] = _write(out, "per_dataset", tables.per_dataset_wide(per), per,
                                            "Per-dataset main scores (x100).",
                                            [_synthetic_note(used),
                                             _note("per-dataset table", used, notes, show=False)])
    abl = tables.ablation(rows)
    if not abl.empty:
        made["ablation (Table 5)"] = _write(out, "ablation", tables.ablation_wide(abl), abl,
                                            "Pooling ablation (x100; paper Table 5: DeepSeekMoE-16B, PromptEOL, "
                                            f"mean of STS12-16). {dagger}",
                                            [_synthetic_note(abl), _note("ablation", rows[
                                                rows.model.isin(set(abl.model)) & (rows.task_type == "STS")],
                                                notes)])
    choice = tables.alpha_choice(rows, prompts)
    if not choice.empty:
        shown = choice.assign(**{c: choice[c].map(render.fmt) for c in choice.columns
                                 if c not in ("model", "prompt", "choice", "alpha", "n")})
        made["α choice"] = _write(out, "alpha_choice", shown, choice,
                                  "MoEE(sum) by how α is chosen (x100): the best α on the test scores (optimistic), "
                                  "the label-free auto α and the dev α (held-out labelled data), each per task "
                                  "(α: min / median / max over tasks).",
                                  [_synthetic_note(rows[rows.emb == "moee_sum"]),
                                   _note("α choice", rows[rows.emb == "moee_sum"], notes)])
    alpha_tab = figures.alpha_table(rows)
    auto = figures.auto_alphas(rows)
    if not auto.empty:
        auto.to_csv(out / "alpha_auto.csv", index=False)
    if not alpha_tab.empty:
        alpha_tab.to_csv(out / "alpha.csv", index=False)
        files = ["alpha.csv"] + (["alpha_auto.csv"] if not auto.empty else [])
        cells = tables._cells(tables.default_pooling(rows[rows.emb == "moee_sum"]))
        for (model, label, prompt), _ in alpha_tab.groupby(["model", "label", "prompt"]):
            cell = cells[(cells.model == model) & (cells.prompt == prompt) & (cells.label == label)]
            # the default cell (MoEE_sum, protocol=paper) keeps the short name; every other label is in the name,
            # so two cells (e.g. real and synthetic data) never write one file
            extra = "" if label == "MoEE_sum [paper protocol]" else "_" + _safe(label.removeprefix("MoEE_sum"))
            name = f"alpha_{_safe(model)}_{_safe(prompt)}{extra}.png"
            figures.plot_alpha(alpha_tab, model, label, prompt, _tasks_text(cell), out / name, auto)
            _note(f"α curve {name}", cell, notes)
            files.append(name)
        made["α curves"] = files
    # the analyses of predictions, real and generated data apart: a dry run's model is named "<model> (synthetic)",
    # which the paper never reports, so it gets no paper number and no Δ
    dry = rows.task_data.fillna("real") == "synthetic" if "task_data" in rows else pd.Series(False, rows.index)
    parts = [rows[~dry], rows[dry].assign(model=rows[dry].model + " (synthetic)")]
    robust = [r for part in parts for r in pr.robustness(part)]
    if robust:
        summary = pr.summary_table(robust)
        files = _write(out, "prompt_robustness", summary.assign(
            ours=summary.ours.map(render.fmt), paper=summary.paper.map(render.fmt),
            diff=summary["diff"].map(lambda x: render.fmt(x, signed=True))), summary,
            "Prompt robustness: mean Spearman correlation between the similarity scores two settings give the "
            "same STS pairs, over pairs of different prompts (paper: DeepSeekMoE-16B, STS12).",
            [SYNTHETIC_NOTE if any(r.model.endswith(" (synthetic)") for r in robust) else ""])
        for r in robust:
            stem = f"prompt_robustness_{_safe(r.model)}_{_safe(r.task)}"
            pr.matrix_table(r).to_csv(out / f"{stem}.csv")
            figures.plot_prompt_heatmap(r, out / f"{stem}.png")
            files += [f"{stem}.csv", f"{stem}.png"]
        made["prompt robustness"] = files
    agree = pd.concat([comp.complementarity(part) for part in parts], ignore_index=True)
    if not agree.empty:
        long = comp.with_paper(agree)
        agree.to_csv(out / "complementarity_per_dataset.csv", index=False)
        shown = long.assign(ours=long.ours.map(render.fmt), paper=long.paper.map(render.fmt),
                            diff=long["diff"].map(lambda x: render.fmt(x, signed=True)))
        made["RW-HS complementarity"] = _write(out, "complementarity", shown, long,
                                               "Agreement of the HS and RW clusterings of the same texts (mean "
                                               "over clustering datasets; paper: DeepSeekMoE-16B).",
                                               [SYNTHETIC_NOTE if agree.model.str.endswith(" (synthetic)").any()
                                                else ""]) + [
            "complementarity_per_dataset.csv"]
    _index(col, out, made, [synthetic, *notes])
    return made


def _index(col: Collection, out: Path, made: dict, notes: list[str] = ()) -> None:
    lines = ["# MoEE report", "", f"{len(col.rows)} result rows from {col.n_jobs} jobs"
             f" ({col.n_duplicates} older runs of the same computation dropped). Scores x100.", ""]
    lines += [f"{n}" for n in notes if n] + ([""] if any(notes) else [])
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
