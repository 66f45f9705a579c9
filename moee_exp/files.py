"""Files on the ground floor: the one atomic write and the one writable-dir check, for every stage that writes.

A job's rows, results table and config.yaml (jobs.record), the feature cache's meta.json (features.cache) and the
embed CLI's .npz (integrations.embed) are written by ``atomic_write``; the config checks (hydra.run.dir, cache.dir,
...), the feature cache and the embed CLI's ``--output`` ask ``unwritable_dir`` before any work starts. Nothing here
words an error for the user: each caller names its own setting and fix, so this module imports nothing of ours.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[BinaryIO], object]) -> None:
    """Write ``data`` at exactly ``path``: text (as UTF-8), bytes, or a function that writes into the open binary
    file (``np.savez``). It goes to a temp file beside ``path`` (``.<name>.<pid>-<random>.tmp``), renamed over
    ``path`` when complete, so a reader, or the run after a killed one, finds the old file or the new one whole,
    never half of one. The dir is created if missing. Whatever stops the write (a full disk, a quota, a file-size
    limit, an unwritable dir, a signal mid-write) removes the temp file, leaves the old file as it was, and is raised
    as it came: the caller words it for its own setting."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        elif isinstance(data, (bytes, bytearray, memoryview)):
            tmp.write_bytes(data)
        else:
            with open(tmp, "wb") as f:
                data(f)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


def unwritable_dir(path: str | os.PathLike) -> tuple[Path, str] | None:
    """Why files cannot be created at ``path`` (a dir, or the dir a file goes into): None when it, or its nearest
    parent that exists (where creating the missing dirs starts), is a dir this process may create files in; else
    that existing path and ``"is not a dir"`` or ``"is not writable"``."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return probe, "is not a dir"
    if not os.access(probe, os.W_OK | os.X_OK):
        return probe, "is not writable"
    return None


def writable(path: str | os.PathLike) -> bool:
    """Whether files can be created at ``path`` (``unwritable_dir`` finds nothing against it)."""
    return unwritable_dir(path) is None
