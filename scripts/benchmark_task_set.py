"""Write a task set (conf/tasks/<name>.yaml) from a benchmark in mteb's own registry (``mteb.get_benchmark``).

    python scripts/benchmark_task_set.py "MTEB(eng, v2)" mteb_eng_v2

The names are mteb's, in the benchmark's order; tests/test_benchmark_task_set.py checks the file against the
installed mteb, so an mteb upgrade that changes the benchmark shows up as a failing test, not a stale list.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def task_set_yaml(benchmark: str, name: str) -> str:
    import mteb

    bench = mteb.get_benchmark(benchmark)
    tasks = list(bench.tasks)
    types = Counter(t.metadata.type for t in tasks)
    lines = [
        f"# mteb's benchmark {benchmark!r} ({len(tasks)} tasks: "
        + ", ".join(f"{n} {t}" for t, n in sorted(types.items())) + "),",
        f"# generated from mteb.get_benchmark by scripts/benchmark_task_set.py (mteb {mteb.__version__}); do not edit.",
        "# Needs the HF hub (or a filled HF datasets cache); tasks.data=synthetic dry-runs the same task classes.",
        "defaults:",
        "  - base_tasks",
        "  - _self_",
        f"name: {name}",
        f"benchmark: {benchmark!r}".replace("'", '"'),  # its tasks as the benchmark filters them (subsets, splits)
        "names:",
        *[f"  - {t.metadata.name}  # {t.metadata.type}" for t in tasks],
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    benchmark, name = argv
    (ROOT / "conf/tasks" / f"{name}.yaml").write_text(task_set_yaml(benchmark, name), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
