"""moee_exp.files: the one atomic write (text, bytes, or a writer function; a failed write keeps the old file and
leaves no temp file) and the one writable-dir check every stage asks."""

import os

import numpy as np
import pytest

from moee_exp.files import atomic_write, unwritable_dir, writable


def test_atomic_write_takes_text_bytes_or_a_writer_and_creates_the_dir(tmp_path):
    atomic_write(tmp_path / "a" / "b.txt", "é\n")
    atomic_write(tmp_path / "c.bin", b"\x00\xff")
    atomic_write(tmp_path / "d.npz", lambda f: np.savez(f, x=np.arange(3)))
    assert (tmp_path / "a" / "b.txt").read_bytes() == "é\n".encode()
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\xff"
    with np.load(tmp_path / "d.npz") as z:
        assert z["x"].tolist() == [0, 1, 2]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("stop", [OSError(28, "No space left on device"), KeyboardInterrupt()], ids=["full", "signal"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, stop):
    path = tmp_path / "row.json"
    atomic_write(path, "old")

    def writer(f):
        f.write(b"half")
        raise stop

    with pytest.raises(type(stop)):
        atomic_write(path, writer)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["row.json"]


def test_unwritable_dir_names_the_nearest_existing_path_and_why(tmp_path):
    assert unwritable_dir(tmp_path / "new" / "deeper") is None and writable(tmp_path / "new")
    (tmp_path / "a_file").write_text("x")
    assert unwritable_dir(tmp_path / "a_file" / "sub") == (tmp_path / "a_file", "is not a dir")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            assert unwritable_dir(locked / "sub") == (locked, "is not writable")
            assert not writable(locked)
        finally:
            locked.chmod(0o700)
