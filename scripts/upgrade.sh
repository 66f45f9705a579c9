#!/usr/bin/env bash
# Upgrade the locked environment to today's releases, as one deliberate step:
#   bash scripts/upgrade.sh
# 1. re-resolve requirements/*.txt to the newest releases within pyproject.toml's ranges (scripts/lock.sh --upgrade);
# 2. install them into .venv (scripts/setup.sh test);
# 3. regenerate every table made from the installed libraries: the MoE coverage table (transformers' families), the
#    paper task table and the MTEB(eng, v2) task set (mteb's metadata);
# 4. print what changed (versions, generated files) and run the suite.
# Then read the diff: a new MoE family is a new coverage row, a failing test is what the new releases changed.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$(mktemp)
trap 'rm -f "$old"' EXIT
cp requirements/test.txt "$old"
bash scripts/lock.sh --upgrade
bash scripts/setup.sh test
.venv/bin/python scripts/moe_coverage.py --jobs "$(nproc)" --write > /dev/null
.venv/bin/python scripts/paper_task_table.py --write > /dev/null
.venv/bin/python scripts/benchmark_task_set.py "MTEB(eng, v2)" mteb_eng_v2 > /dev/null
echo "== versions changed (old -> new)"
.venv/bin/python scripts/lock_diff.py "$old" requirements/test.txt
echo "== files changed"
git status --short -- requirements docs conf
echo "== the suite"
.venv/bin/python -m pytest -q
