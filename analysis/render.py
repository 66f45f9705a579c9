"""Tables of strings → Markdown and LaTeX. Columns may be grouped: a column named (group, name) goes under
``group`` (a LaTeX ``\\multicolumn`` header; ``name (group)`` in Markdown, which has one header row)."""

from __future__ import annotations

import math
import re

import pandas as pd


def fmt(x, digits: int = 2, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _names(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return [c if isinstance(c, tuple) else ("", c) for c in frame.columns]


def markdown(frame: pd.DataFrame) -> str:
    header = [f"{n} ({g})" if g else n for g, n in _names(frame)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _tex(s) -> str:
    s = str(s)
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("α", r"$\alpha$"), ("Δ", r"$\Delta$"), ("†", r"$^\dagger$"), ("‡", r"$^\ddagger$"),
                 ("–", "--")]:
        s = s.replace(a, b)
    return s


def latex(frame: pd.DataFrame, caption: str = "", label: str = "") -> str:
    names = _names(frame)
    groups = []  # (group, first column, width)
    for i, (g, _) in enumerate(names):
        if groups and groups[-1][0] == g:
            groups[-1][2] += 1
        else:
            groups.append([g, i, 1])
    numeric = re.compile(r"^([+-]?\d+(\.\d+)?†?‡?|–|)$")
    spec = "".join("r" if all(numeric.match(str(v)) for v in frame.iloc[:, i]) else "l" for i in range(len(names)))
    out = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if any(g for g, _, _ in groups):
        cells, rules = [], []
        for g, first, width in groups:
            cells.append(rf"\multicolumn{{{width}}}{{c}}{{{_tex(g)}}}" if g else " & ".join([""] * width))
            if g:
                rules.append(rf"\cmidrule(lr){{{first + 1}-{first + width}}}")
        out += [" & ".join(cells) + r" \\", " ".join(rules)]
    out += [" & ".join(_tex(n) for _, n in names) + r" \\", r"\midrule"]
    out += [" & ".join(_tex(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    out += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        out.append(rf"\caption{{{_tex(caption)}}}")
    if label:
        out.append(rf"\label{{{label}}}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"
