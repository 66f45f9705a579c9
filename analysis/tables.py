"""The paper's tables from collected rows (analysis.collect), with the paper's numbers beside ours.

- main: rows model x method, a column group per prompt, columns = task types + Avg (type score = mean over that
  type's datasets; Avg = mean of the type scores), and where the paper reports the cell (Tables 3-4), a "paper"
  and a "Δ" (ours - paper) row under ours. MoEE_sum is shown at the best α per model x prompt (highest Avg among
  the α values run; the α is printed), or at a fixed α (``alpha=0.5``). Selecting α on the scores it is judged
  by is optimistic, as in the paper (which tunes it).
- per_dataset: the same cells per dataset (appendix).
- ablation: Table 5, pooling variants on STS12-16 (or the STS datasets run) and the best MoEE.
A cell marked † averages fewer datasets (or task types) than the most complete cell of its column.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from moee_exp.features.prompts import TEMPLATES
from moee_exp.scoring import kinds

from . import paper
from .collect import TASK_TYPES
from .render import fmt

MAIN_PROMPTS = ("none", "prompteol")  # Tables 3-4; other prompts go to the main table only if these are absent
METHOD_ORDER = ["HS", "RW", "MoEE_concat", "MoEE_sum"]
SHORT = {"Classification": "Class.", "Clustering": "Clust.", "PairClassification": "PairCls.",
         "Reranking": "Rerank.", "Retrieval": "Retr.", "STS": "STS", "Summarization": "Summ."}
CELL = ["model", "method", "label", "alpha", "prompt", "task_data"]
ABLATION_TASKS = ["STS12", "STS13", "STS14", "STS15", "STS16"]
VARIANTS = {
    "hs": "HS: last token, last layer", "hs_mean_layers": "HS: last token, mean of layers",
    "hs_mean_tokens": "HS: mean of tokens, last layer", "hs_mean_tokens_layers": "HS: mean of tokens and layers",
    "rw": "RW: last token", "rw_mean_tokens": "RW: mean of tokens", "moee_best": "MoEE (best)",
}


def _label(r) -> str:
    """Method name, plus the settings that differ from its protocol's defaults, plus the protocol tag (paper: the
    public code's computation; clean: ours; README "Two protocols") with "synthetic" for a dry run's rows. The tag
    reads "[paper protocol]", never a bare "[paper]" that a reader could take for the paper's own numbers."""
    protocol = getattr(r, "protocol", None) or "clean"
    extra = []
    # paper's RW activation is per model (DeepSeekMoE: softmax), so under paper it is not a deviation
    if protocol != "paper" and r.emb != "hs" and r.rw_activation not in (None, "logits"):
        extra.append(str(r.rw_activation))
    kind = kinds.get(r.emb) if r.emb in kinds.names() else None  # the kind's own default (moee_exp.scoring.kinds)
    default_std = (kind.paper_standardize if protocol == "paper" else kind.standardize) if kind else None
    if r.standardize not in (None, default_std):
        extra.append(f"std={r.standardize}")
    tag = [f"{protocol} protocol"] + (["synthetic"] if getattr(r, "task_data", None) == "synthetic" else [])
    return r.method + (f" ({', '.join(extra)})" if extra else "") + f" [{', '.join(tag)}]"


# setting fields never shown to tell cells apart: α has its own column; the data source is in the tag already
_NOT_SHOWN = {"weights.alpha", "alpha", "data", "task_data"}
_GROUPS = ("protocol.", "model.", "emb.", "prompt.", "features.", "weights.")


def _short(key: str) -> str:
    return next((key[len(g):] for g in _GROUPS if key.startswith(g)), key)


def _value(v) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= 24 else text[:21] + "..."


def _distinguish(df: pd.DataFrame) -> list[str]:
    """The labels of ``df`` (with ``label`` and ``cell_id``), each cell that shares its model, label, prompt and
    pooling with another cell (another computation) extended by the settings in which they differ, e.g.
    "HS [paper protocol, instructions=none]": two computations never share a label, so never a table cell."""
    labels = list(df.label)
    if "cell_id" not in df or df.cell_id.isna().all():
        return labels
    pos = {i: n for n, i in enumerate(df.index)}
    group = ["model", "label", "prompt", "hs_feature", "rw_feature"]
    for _, g in df.groupby(group, dropna=False, sort=False):
        cells = g.drop_duplicates("cell_id")
        if len(cells) < 2:
            continue
        settings = {c.cell_id: json.loads(c.setting) if isinstance(c.setting, str) else {} for c in cells.itertuples()}
        keys = sorted({k for s in settings.values() for k in s} - _NOT_SHOWN)
        differ = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True, default=str)
                                         for s in settings.values()}) > 1]
        extra = {cid: ", ".join(f"{_short(k)}={_value(s.get(k))}" for k in differ) for cid, s in settings.items()}
        # cells still alike in label, α and data source differ only in fields not shown: name them by their id
        shown = {cid: (extra[cid], json.dumps([s.get("weights.alpha", s.get("alpha")),
                                               s.get("data", s.get("task_data"))], default=str))
                 for cid, s in settings.items()}
        if len(set(shown.values())) < len(shown):
            extra = {cid: (e + ", " if e else "") + f"cell {cid[:6]}" for cid, e in extra.items()}
        for i, cid in zip(g.index, g.cell_id):
            if extra[cid]:
                labels[pos[i]] = labels[pos[i]].removesuffix("]") + f", {extra[cid]}]"
    return labels


PER_TASK = {"auto": "auto α", "dev": "dev α"}  # weights options whose α is chosen per task (moee_exp.scoring.weights)
BEST = "best α on test"  # the label of MoEE_sum at the α tuned on the scores it is judged by: optimistic


def _cells(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with their table label; an auto/dev row is one cell per job (its α varies by task: alpha = NaN)."""
    labels = [_label(r) + (f" ({PER_TASK[r.weights]})" if getattr(r, "weights", None) in PER_TASK else "")
              for r in rows.itertuples()]
    per_task = rows.get("weights", pd.Series(index=rows.index, dtype=object)).isin(list(PER_TASK))
    df = rows.assign(label=labels, alpha=rows.alpha.where(~per_task))
    if "task_data" not in df:
        df["task_data"] = "real"
    df["task_data"] = df.task_data.fillna("real")
    df["label"] = _distinguish(df)
    # one row per shown cell and dataset, the latest (labels tell computations apart: _distinguish)
    key = CELL + ["hs_feature", "rw_feature", "task"]
    return df.sort_values("computed_at", kind="stable").drop_duplicates(key, keep="last")


def default_pooling(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[(rows.hs_feature == "hs") & (rows.rw_feature == "rw")]


def type_scores(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell and column (each task type, then Avg): ours (x100) and n (datasets, or types for Avg)."""
    if "main_score_name" not in df:
        df = df.assign(main_score_name=None)
    by_type = df.groupby(CELL + ["task_type"], dropna=False).agg(
        ours=("score", "mean"), n=("score", "count"),
        metric=("main_score_name", lambda m: ",".join(sorted({str(x) for x in m if isinstance(x, str)})))).reset_index()
    avg = by_type.groupby(CELL, dropna=False).ours.agg(ours="mean", n="count").reset_index()
    out = pd.concat([by_type.rename(columns={"task_type": "column"}), avg.assign(column="Avg", metric="")],
                    ignore_index=True)
    return out


def select_alpha(df: pd.DataFrame, alpha="best") -> pd.DataFrame:
    """Keep one α per MoEE_sum cell: the best by Avg (among the most complete), or the given value."""
    is_sum = (df.emb == "moee_sum") & df.alpha.notna()  # auto/dev cells (alpha NaN) are kept as they are
    if alpha != "best":
        return df[~is_sum | df.alpha.sub(float(alpha)).abs().lt(1e-9)]
    key = ["model", "label", "prompt", "alpha"]
    avg = type_scores(df[is_sum]).query("column == 'Avg'")[key + ["ours"]]
    avg = avg.merge(df[is_sum].groupby(key).task.nunique().rename("n_datasets").reset_index(), on=key)
    best = avg.sort_values(["n_datasets", "ours"], ascending=False).drop_duplicates(key[:-1])[key]
    tuned = df[is_sum].merge(best, on=key)
    tuned = tuned.assign(label=[f"{lbl} ({BEST})" if lbl.startswith("MoEE_sum") and "(" not in lbl else lbl
                                for lbl in tuned.label])
    return pd.concat([df[~is_sum], tuned])


def main_rows(rows: pd.DataFrame, alpha="best", prompts=None) -> pd.DataFrame:
    """The rows the main table averages (each with its cell's label)."""
    df = select_alpha(_cells(default_pooling(rows)), alpha)
    if prompts is None:
        prompts = [p for p in MAIN_PROMPTS if p in set(df.prompt)] or sorted(set(df.prompt))
    return df[df.prompt.isin(prompts)]


def main_long(rows: pd.DataFrame, alpha="best", prompts=None) -> pd.DataFrame:
    """model, method, label, alpha, prompt, task_data, column, ours, n, metric (the main scores averaged), paper,
    diff (tidy; the CSV). Rows on generated data (task_data=synthetic) get no paper number and no Δ."""
    df = main_rows(rows, alpha, prompts)
    out = type_scores(df).merge(paper.main_results(), on=["model", "method", "prompt", "column"], how="left")
    out.loc[out.task_data == "synthetic", "paper"] = float("nan")  # generated data: never compared with the paper
    out["diff"] = out.ours - out.paper
    return out.sort_values(["model", "label", "prompt"]).reset_index(drop=True)


def prompt_order(prompts) -> list[str]:
    """The paper's two main prompts first, then the other paper prompts in their order, then any other."""
    rank = {p: i for i, p in enumerate([*MAIN_PROMPTS, *TEMPLATES])}
    return sorted(set(prompts), key=lambda p: (rank.get(p, len(rank)), p))


def _columns(long: pd.DataFrame) -> list[str]:
    present = set(long.column) - {"Avg"}
    return [t for t in TASK_TYPES if t in present] + sorted(present - set(TASK_TYPES)) + ["Avg"]


def _order(labels) -> list[str]:
    choice = [BEST, *PER_TASK.values()]  # MoEE_sum: best α on test, then auto α, then dev α

    def rank(s):
        return next((i for i, c in enumerate(choice) if f"({c})" in s), -1)

    return sorted(set(labels), key=lambda s: (METHOD_ORDER.index(s.split(" ")[0]) if s.split(" ")[0] in
                                              METHOD_ORDER else 9, rank(s), s))


REPORTED = "in the paper"  # the row of the paper's own numbers (Tables 3-4), under ours
METRIC_MARK = "‡"  # a cell whose main score is another metric than its column's (metric_note says which)


def column_metrics(long: pd.DataFrame) -> dict[str, str]:
    """{column: its metric} (the metric most of its cells report) for the columns whose cells mix metrics."""
    if "metric" not in long:
        return {}
    out = {}
    for column, g in long[(long.column != "Avg") & long.metric.fillna("").ne("")].groupby("column"):
        if g.metric.nunique() > 1:
            out[column] = g.metric.value_counts().index[0]
    return out


def metric_note(long: pd.DataFrame) -> str:
    """A footnote naming each column whose cells report different main scores, and which cells report which."""
    notes = []
    for column, usual in column_metrics(long).items():
        g = long[(long.column == column) & long.metric.fillna("").ne("")]
        other = g[g.metric != usual]
        others = "; ".join(f"`{m}` for {', '.join(sorted(set(o.label)))}" for m, o in other.groupby("metric"))
        notes.append(f"{METRIC_MARK} {column}: `{usual}`, but {others}")
    if not notes:
        return ""
    return (" ".join(notes) + " (protocol=paper's MoEE(sum) is scored as the public code scores it, with mteb 1.x's "
            "metric, which is what the paper reports: its Reranking column is MAP; mteb 2's evaluators give the "
            "other rows `map_at_1000`).")


def main_wide(long: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout as strings: ours, then the paper's numbers and Δ rows where the paper has the model x
    method (never for rows on generated data). A cell marked ‡ reports another metric than its column's."""
    prompts = prompt_order(long.prompt)
    columns, has_sum = _columns(long), (long.method == "MoEE_sum").any()
    full = long.groupby(["prompt", "column"]).n.max()
    usual = column_metrics(long)
    cell = {(r.model, r.label, r.prompt, r.column): r for r in long.itertuples()}
    records = []
    for model in sorted(set(long.model)):
        for label in _order(long[long.model == model].label):
            kinds = ["ours"] + ([REPORTED, "Δ"] if long[(long.model == model) & (long.label == label)].paper
                                .notna().any() else [])
            for kind in kinds:
                rec = {("", "model"): model, ("", "method"): label, ("", ""): kind}
                for p in prompts:
                    for c in columns:
                        r = cell.get((model, label, p, c))
                        value = None if r is None else {"ours": r.ours, REPORTED: r.paper, "Δ": r.diff}[kind]
                        mark = "†" if kind == "ours" and r is not None and r.n < full.get((p, c), 0) else ""
                        if kind == "ours" and r is not None and c in usual and getattr(r, "metric", "") not in (
                                "", usual[c]):
                            mark += METRIC_MARK
                        rec[(p, SHORT.get(c, c))] = fmt(value, signed=kind == "Δ") + mark
                    if has_sum:
                        r = cell.get((model, label, p, "Avg"))
                        a = r.alpha if kind == "ours" and r is not None else float("nan")
                        per_task = kind == "ours" and r is not None and any(v in label for v in PER_TASK.values())
                        rec[(p, "α")] = "per task" if per_task else "" if a is None or math.isnan(a) else f"{a:g}"
                records.append(rec)
    return pd.DataFrame(records, columns=list(records[0]) if records else None)


def per_dataset(rows: pd.DataFrame, alpha="best") -> pd.DataFrame:
    """model, method, label, alpha, prompt, task_type, task, score (tidy; the CSV)."""
    df = select_alpha(_cells(default_pooling(rows)), alpha)
    return df[CELL + ["task_type", "task", "score"]].sort_values(CELL + ["task_type", "task"]).reset_index(drop=True)


def per_dataset_wide(long: pd.DataFrame) -> pd.DataFrame:
    tasks = long[["task_type", "task"]].drop_duplicates()
    tasks = tasks.assign(o=tasks.task_type.map(lambda t: TASK_TYPES.index(t) if t in TASK_TYPES else 9))
    tasks = list(tasks.sort_values(["o", "task_type", "task"]).itertuples(index=False))
    score = {(r.model, r.label, r.prompt, r.task): r.score for r in long.itertuples()}  # one α per cell here
    records = []
    prompts = prompt_order(long.prompt)
    keys = [(m, p, lbl) for m in sorted(set(long.model)) for p in prompts
            for lbl in _order(long[(long.model == m) & (long.prompt == p)].label)]
    for model, prompt, label in keys:
        sub = long[(long.model == model) & (long.prompt == prompt) & (long.label == label)]
        a = sub.alpha.iloc[0] if sub.method.iloc[0] == "MoEE_sum" else None
        rec = {("", "model"): model, ("", "prompt"): prompt, ("", "method"): label,
               ("", "α"): "" if a is None else "per task" if math.isnan(a) else f"{a:g}"}
        for t in tasks:
            rec[(t.task_type, t.task)] = fmt(score.get((model, label, prompt, t.task)))
        records.append(rec)
    return pd.DataFrame(records, columns=list(records[0]) if records else None)


def ablation(rows: pd.DataFrame) -> pd.DataFrame:
    """Table 5, one block per model x prompt that has a non-default pooling: model, prompt, variant, label,
    one column per dataset, mean, n, paper, diff."""
    df = _cells(rows)
    pooled = df[(df.hs_feature != "hs") | (df.rw_feature != "rw")][["model", "prompt", "task_data"]].drop_duplicates()
    ref = paper.ablation()
    blocks = []
    for model, prompt, data in pooled.itertuples(index=False):  # real and generated data: separate blocks
        sub = df[(df.model == model) & (df.prompt == prompt) & (df.task_type == "STS") & (df.task_data == data)]
        tasks = [t for t in ABLATION_TASKS if t in set(sub.task)] or sorted(set(sub.task))
        sub = sub[sub.task.isin(tasks)]
        sub = sub.assign(variant=[{"hs": r.hs_feature, "rw": r.rw_feature}.get(r.emb, "moee")
                                  if r.emb in ("hs", "rw") or (r.hs_feature, r.rw_feature) == ("hs", "rw") else None
                                  for r in sub.itertuples()]).dropna(subset=["variant"])
        sub = sub.assign(alpha=sub.alpha.fillna(-1.0))  # pivot_table drops NaN keys
        wide = sub.pivot_table(index=["variant", "label", "emb", "alpha"], columns="task", values="score")
        wide = wide.reindex(columns=tasks).reset_index().rename_axis(columns=None)
        wide["alpha"] = wide.alpha.where(wide.alpha >= 0)
        wide["n"] = wide[tasks].notna().sum(axis=1)
        wide["mean"] = wide[tasks].mean(axis=1)
        moee = wide[wide.variant == "moee"].sort_values(["n", "mean"], ascending=False).head(1)
        if len(moee):
            m = moee.iloc[0]
            what = m.label.replace("MoEE_", "") + (f" α={m.alpha:g}" if m.emb == "moee_sum" else "")
            moee = moee.assign(variant="moee_best", label=f"MoEE (best: {what})")
        single = wide[wide.variant != "moee"].assign(label=lambda w: [
            VARIANTS.get(v, v) + lbl[len(lbl.split(" ")[0]):] for v, lbl in zip(w.variant, w.label)])
        block = pd.concat([single, moee]).assign(model=model, prompt=prompt, task_data=data)
        block["o"] = block.variant.map(lambda v: list(VARIANTS).index(v) if v in VARIANTS else 9)
        blocks.append(block.sort_values(["o", "label"]))
    if not blocks:
        return pd.DataFrame()
    out = pd.concat(blocks, ignore_index=True).merge(ref[["model", "prompt", "variant", "score"]].rename(
        columns={"score": "paper"}), on=["model", "prompt", "variant"], how="left")
    out.loc[out.task_data == "synthetic", "paper"] = float("nan")  # generated data: never compared with the paper
    out["diff"] = out["mean"] - out.paper
    task_cols = [c for c in out.columns if c in set(rows.task)]
    return out[["model", "prompt", "task_data", "variant", "label", *task_cols, "mean", "n", "paper", "diff"]]


def ablation_wide(table: pd.DataFrame) -> pd.DataFrame:
    fixed = {"model", "prompt", "task_data", "variant", "label", "mean", "n", "paper", "diff"}
    tasks = [c for c in table.columns if c not in fixed]
    records = []
    for r in table.to_dict("records"):
        rec = {"model": r["model"], "prompt": r["prompt"], "pooling": r["label"]}
        rec.update({t: fmt(r[t]) for t in tasks})
        full = table[(table.model == r["model"]) & (table.prompt == r["prompt"])
                     & (table.task_data == r["task_data"])].n.max()
        rec["mean"] = fmt(r["mean"]) + ("†" if r["n"] < full else "")
        rec["paper"], rec["Δ"] = fmt(r["paper"]), fmt(r["diff"], signed=True)
        records.append(rec)
    return pd.DataFrame(records)


def alpha_choice(rows: pd.DataFrame, prompts=None) -> pd.DataFrame:
    """MoEE(sum) side by side per model x prompt: at the best α on test (optimistic: tuned on the scores it is
    judged by), at the auto α and at the dev α (moee_exp.scoring.weights; per task), where run. Columns: model, prompt,
    choice, alpha (the α, or min / median / max over tasks), each task type, Avg, n (types in Avg)."""
    sums = rows[rows.emb == "moee_sum"]
    if sums.empty or not sums.weights.isin(list(PER_TASK)).any():
        return pd.DataFrame()
    long = main_long(sums, "best", prompts or sorted(set(sums.prompt)))
    long = long[long.label.str.startswith("MoEE_sum")]
    spread = {}
    for (model, prompt, w), g in sums[sums.weights.isin(list(PER_TASK))].groupby(["model", "prompt", "weights"]):
        spread[(model, prompt, PER_TASK[w])] = f"{g.alpha.min():.3g} / {g.alpha.median():.3g} / {g.alpha.max():.3g}"
    records = []
    for (model, label, prompt), g in long.groupby(["model", "label", "prompt"], sort=False):
        choice = next((v for v in [*PER_TASK.values(), BEST] if v in label), "α = fixed")
        a = g.alpha.dropna()
        rec = {"model": model, "prompt": prompt, "choice": choice + (" (optimistic)" if choice == BEST else ""),
               "alpha": spread.get((model, prompt, choice), f"{a.iloc[0]:g}" if len(a) else "")}
        rec.update({c: g.set_index("column").ours.get(c) for c in _columns(long)})
        rec["n"] = g.set_index("column").n.get("Avg")
        records.append(rec)
    order = {f"{BEST} (optimistic)": 0, "auto α": 1, "dev α": 2}
    return pd.DataFrame(records).sort_values(["model", "prompt", "choice"], key=lambda s: s.map(
        lambda v: order.get(v, 9)) if s.name == "choice" else s).reset_index(drop=True)


def _version_key(v: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in v.replace("+", ".").split("."))


def versions_note(rows: pd.DataFrame) -> str:
    """One line when ``rows`` (those one table puts together) come from different versions of a library that can
    move a score, naming each package and its versions; "" when they agree (rows without versions are ignored)."""
    diffs = []
    for col in [c for c in rows.columns if c.startswith("versions.")]:
        found = sorted({str(v) for v in rows[col] if isinstance(v, str) and v}, key=_version_key)
        if len(found) > 1:
            diffs.append(f"{col.removeprefix('versions.')} {', '.join(found[:-1])} and {found[-1]}")
    return f"note: rows from {'; '.join(diffs)} are in this table" if diffs else ""
