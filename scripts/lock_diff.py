"""Print the packages whose locked version differs between two lock files (requirements/*.txt).

    python scripts/lock_diff.py OLD NEW
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def pins(path: str) -> dict[str, str]:
    """{name (with its marker, if any): version} of a lock file."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if m := PIN.match(line):
            name, version, marker = m.groups()
            out[f"{name.lower()}{f' ; {marker}' if marker else ''}"] = version
    return out


def main(argv=None) -> int:
    old_path, new_path = argv or sys.argv[1:]
    old, new = pins(old_path), pins(new_path)
    changed = [(n, old.get(n, "-"), new.get(n, "-")) for n in sorted(set(old) | set(new)) if old.get(n) != new.get(n)]
    for name, a, b in changed:
        print(f"{name}: {a} -> {b}")
    if not changed:
        print("(no version changed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
