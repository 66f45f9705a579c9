"""datasets' lazy Column, read in one batch: the dominant cost of mteb's scoring at real size.

Since datasets 4, ``dataset["text"]`` is a lazy ``Column``. mteb's evaluators turn such columns into arrays and new
datasets (``np.asarray(labels)`` in every sklearn metric, ``Dataset.from_dict({"text": column})`` before each
encode, ``labels[i]`` in loops), and each of those reads the column one row at a time through datasets' formatter.
At real size that is most of mteb's scoring time (datasets 3.x returned a list and did not
pay it), and an α sweep pays it again for every α: BENCHMARKS.md, "The α sweep".

``install()`` makes a Column of an unformatted (Python) dataset read its values once, as one batch through the same
formatter (so the same decoded values), and serve iteration and reads of single rows from them (numpy and
pyarrow read a sequence through those; single rows switch after a few, so a peek does not read a whole column).
Any other case (a formatted dataset, a nested column, a slice, a list of indices) goes to datasets' own code. Scores are unchanged (tests/test_fast_columns.py); ``MOEE_FAST_COLUMNS=0`` leaves
datasets as it is.
"""

from __future__ import annotations

import os

import numpy as np
from datasets.arrow_dataset import Dataset

try:
    from datasets.arrow_dataset import (
        Column,  # datasets >= 4; 3.x returns lists, nothing to do
    )
except ImportError:
    Column = None

_original: dict = {}
ROW_READS_BEFORE_BATCH = 16  # a few single rows (a peek at row 0) do not read a whole, maybe huge, column


def enabled() -> bool:
    return os.environ.get("MOEE_FAST_COLUMNS", "1") != "0"


def _values(column) -> list | None:
    """The column's values, read once per column object; None where datasets' own per-row path must answer."""
    source = column.source
    if not isinstance(source, Dataset) or source._format_type not in (None, "python"):
        return None
    key = (id(source._data), id(source._indices), source._format_type)  # the view the values were read from
    cached = column.__dict__.get("_moee_values")
    if cached is None or cached[0] != key:
        name = column.column_name
        cached = column.__dict__["_moee_values"] = (key, source._fast_select_column(name)[:][name])
    return cached[1]


def _iter(self):
    values = _values(self)
    yield from (_original["__iter__"](self) if values is None else values)


def _getitem(self, key):
    # a slice is one batch read by datasets already; single rows switch to the batch once they are many
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        reads = self.__dict__["_moee_row_reads"] = self.__dict__.get("_moee_row_reads", 0) + 1
        if reads > ROW_READS_BEFORE_BATCH or "_moee_values" in self.__dict__:
            values = _values(self)
            if values is not None:
                return values[key]
    return _original["__getitem__"](self, key)


def install() -> bool:
    """Patch datasets' Column (once per process) unless MOEE_FAST_COLUMNS=0; True when the patch is in place."""
    if _original:
        return True
    if not enabled() or Column is None or not hasattr(Dataset, "_fast_select_column"):
        return False
    _original.update(__iter__=Column.__iter__, __getitem__=Column.__getitem__)
    Column.__iter__, Column.__getitem__ = _iter, _getitem  # numpy and pyarrow read a sequence through these
    return True


def uninstall() -> None:
    """Restore datasets' own Column (tests, benchmarks)."""
    if _original:
        Column.__iter__, Column.__getitem__ = _original.pop("__iter__"), _original.pop("__getitem__")
