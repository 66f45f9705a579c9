"""On-disk cache of pooled features, below the fusion step: one forward pass per model × prompt × text.

Every emb kind and every α of a sweep reads the same pooled HS / RW (and ablation poolings), so only the first job
that sees a text pays for its forward pass; a job whose features are all cached never loads the model.

Layout (``cache.dir``, default ``${paths.cache_dir}/features``)::

    <dir>/<namespace>/meta.json              what the namespace is (for people; lookups use the dir name)
    <dir>/<namespace>/<feature>/<sha>.npy    shards: one per feature per encode call that extracted something

- A **namespace** is the hash of everything that changes a feature value except the text: the model's identity
  (tiny spec hash / local dir fingerprint / hub id + revision, resolved dtype, quantization, device type,
  trust_remote_code), the prompt template, text normalization, max_length, ``extract.EXTRACTION_VERSION``, the
  torch and transformers versions and the storage dtype. Batch size and padding side are not in it: a text's
  features do not depend on its batch (they agree to float rounding, tested to 1e-5).
- A **shard** is a plain ``.npy`` (no pickle) of records ``(key: 16 bytes, value: float32/float16 array)``, the key
  being the first 16 bytes of the text's sha256. It is written to a temp file, fsynced and ``os.replace``d to a
  name that is the sha256 of its own bytes: a killed writer leaves only an ignored temp file, two writers never
  write the same name with different bytes, and a reader checks each shard's bytes against its name once per
  process. A truncated or corrupted shard is logged, removed, and its texts are extracted again.
- Texts already in the index are never written again, so the size is what the cache holds (n × (16 + 4·dims)
  bytes in float32; half the values' size with ``cache.dtype=float16``). Concurrent jobs that miss the same text
  at the same moment may both write it (harmless duplicates, each text at most once per job).
- Concurrent jobs sharing the cache (a parallel or SLURM sweep) take turns to extract: a job that misses texts
  takes ``<namespace>/.extract.lock`` (``fcntl.flock``), looks the texts up again, extracts what is still missing
  and stores it before letting the next one in, which then finds them cached. So each text is extracted (and the
  model loaded) once per model × prompt even when the jobs of a sweep start together; ``cache.lock=false`` turns
  this off (each job extracts its own misses). The lock's heartbeat proves progress: its mtime is refreshed only
  after the holder's work moved on (``heartbeat()``: each extracted batch, each shard indexed or written), so a
  holder that is stuck (a hung kernel) goes stale after ``cache.lock_stale_s`` and its waiters take over.
- The index (key → shard, row) is kept in memory per namespace for the life of the process, so the jobs of a
  sweep run in one process (Hydra's basic launcher) read each shard's keys once; values are read from each
  shard's memory map, kept open for the life of the process (its pages mapped once, not once per job), each
  shard's rows in file order. ``locate`` finds keys once for both the check and the read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from pathlib import Path

import numpy as np

from ..checks import Checked, choice
from ..errors import ConfigError, LockWaitTimeout
from ..faults import pid_alive
from ..files import atomic_write, writable

try:
    import fcntl
except ImportError:  # Windows: no cross-process extraction lock
    fcntl = None

log = logging.getLogger(__name__)

CACHE_DTYPES = ("float32", "float16")
KEY_BYTES = 16
_SHARD_NAME = re.compile(r"^([0-9a-f]{32})\.npy$")
_FEATURE_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_TMP_PREFIX = ".tmp-"
_STALE_TMP_S = 24 * 3600  # a temp file this old belongs to a writer that was killed
LOCK_FIRST_LOG_S = 2.0  # a job waiting for the extraction lock says who holds it after this long ...
LOCK_LOG_EVERY_S = 60.0  # ... and then this often
LOCK_POLL_S = 0.25
_NOWHERE = (-1, -1)  # the location of a key that is not cached
GATHER_ROWS = 128  # rows copied per step of a read: a step's block (1 MB at 2048 dims) stays in the CPU's cache


@dataclass
class CacheConfig(Checked):
    group = "cache"

    enabled: bool = True  # false: every job extracts its features again (the public code's behaviour)
    dir: str = "${paths.cache_dir}/features"  # shared by concurrent jobs (joblib, SLURM arrays) on one filesystem
    dtype: str = field(default="float32", metadata=choice(CACHE_DTYPES))  # float32 | float16 (half the disk; features rounded to float16)
    lock: bool = True  # concurrent jobs take turns to extract, so each text is extracted once (moee_exp.features.cache)
    # a holder of the extraction lock whose extraction has not moved on (no batch done) for this long (hung, stopped,
    # dead node) is taken over: the longest a waiter waits for a holder that makes no progress
    lock_stale_s: int = field(default=300, metadata={"min": 1})
    lock_wait_s: int = field(default=0, metadata={"min": 0})  # give up waiting for the lock after this long; 0: never


class CacheMiss(KeyError):
    """A shard vanished or failed between indexing and reading: the caller looks its texts up again."""


_progress = [0]  # how much extraction work this process has done (heartbeat()): what keeps a held lock fresh


def heartbeat() -> None:
    """Say that this process's extraction moved on (moee_exp.features.extract calls it after each batch). A held
    extraction lock is refreshed only after a heartbeat, so a holder whose work is stuck, however alive its process
    and threads, stops refreshing it and is taken over after ``cache.lock_stale_s``."""
    _progress[0] += 1


def _not_a_dir(path: Path, err: OSError) -> ConfigError:
    """One line for a feature-cache path where a dir must be and a file is (``path``: the dir the cache wanted)."""
    probe = Path(path)
    while probe != probe.parent and not probe.is_file():
        probe = probe.parent
    where = probe if probe.is_file() else Path(path)
    return ConfigError(f"feature cache: {where} is a file, not a dir ({err.strerror or err}): remove it (its features "
                       "are extracted again) or point cache.dir at another dir")


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:KEY_BYTES]


def text_keys(texts: Sequence[str]) -> list[bytes]:
    """``[text_key(t) for t in texts]``, without a Python call per text (a job hashes ~10^5 texts per dataset)."""
    sha = hashlib.sha256
    return [sha(t.encode("utf-8", "surrogatepass")).digest()[:KEY_BYTES] for t in texts]


def identity_hash(identity: Mapping) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


class _HashingWriter:
    """File-like object np.save writes through: bytes go to the file and into a running sha256."""

    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def write(self, data) -> int:
        self.h.update(data)
        return self.f.write(data)


class _Shard:
    __slots__ = ("path", "dtype", "shape", "values")

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple, values: np.ndarray | None = None):
        self.path, self.dtype, self.shape = path, dtype, shape
        # the memory-mapped values, kept open for the life of the process once read: a read faults the pages into
        # this mapping once, not once per job (shards are never changed in place, only replaced or removed, which
        # leaves a mapping valid)
        self.values = values


class Namespace:
    """The cached features of one model × prompt × settings: ``contains``, ``get`` and ``put`` by text key."""

    def __init__(self, path: Path, identity: Mapping, dtype: str = "float32", lock: bool = True,
                 lock_stale_s: float = 300, lock_wait_s: float = 0):
        if dtype not in CACHE_DTYPES:
            raise ValueError(f"cache dtype {dtype!r} is not one of {CACHE_DTYPES}")
        self.path, self.identity, self.dtype, self.lock = Path(path), dict(identity), dtype, lock
        self.lock_stale_s, self.lock_wait_s = lock_stale_s, lock_wait_s
        self._lock = threading.RLock()
        self._shards: dict[str, list[_Shard | None]] = {}
        self._index: dict[str, dict[bytes, tuple[int, int]]] = {}
        self._seen: dict[str, set[str]] = {}  # shard file names indexed (or found bad and left in place)

    # -- reading ------------------------------------------------------------------------------------------------

    def refresh(self, feature: str) -> None:
        """Index shards of ``feature`` that appeared on disk since the last look (this or another process)."""
        _check_feature(feature)
        with self._lock:
            index = self._index.setdefault(feature, {})
            shards = self._shards.setdefault(feature, [])
            seen = self._seen.setdefault(feature, set())
            folder = self.path / feature
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                return
            except NotADirectoryError as err:  # <namespace>/<feature> (or a dir above it) is a file
                raise _not_a_dir(folder, err) from None
            for name in sorted(names):
                if name in seen:
                    continue
                m = _SHARD_NAME.match(name)
                if not m:
                    if name.startswith(_TMP_PREFIX):
                        _remove_if_stale(folder / name)
                    continue
                shard, keys = self._verify(folder / name, m.group(1))
                heartbeat()  # indexing a large shared cache is work too
                if shard is None:
                    continue
                seen.add(name)
                n = len(shards)
                shards.append(shard)
                for row, key in enumerate(keys):
                    index.setdefault(key, (n, row))

    def _verify(self, path: Path, digest: str):
        """Open a shard whose bytes hash to its name. Bytes proven wrong (checksum, layout): logged and removed.
        A shard that cannot be read (permission denied on a shared cache, a network filesystem's I/O error) is
        someone's good features: skipped for the life of the process, left in place, logged once (None)."""
        try:
            if _file_sha(path)[:32] != digest:
                raise ValueError("its bytes do not match its checksum (truncated or corrupted)")
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            names = arr.dtype.names or ()
            if arr.ndim != 1 or names != ("key", "value") or arr.dtype["key"].itemsize != KEY_BYTES:
                raise ValueError(f"unexpected record layout {arr.dtype}")
            raw = np.ascontiguousarray(arr["key"]).tobytes()
            value = arr.dtype["value"]
            shard = _Shard(path, value.base, value.shape, np.asarray(arr["value"]))  # the mapping is kept
            del arr
        except FileNotFoundError:
            return None, []
        except OSError as err:  # could not read it: proves nothing about its bytes
            log.warning("feature cache: skipping unreadable shard %s (left in place): %s", path, err)
            self._seen.setdefault(path.parent.name, set()).add(path.name)
            return None, []
        except ValueError as err:
            log.warning("feature cache: ignoring and removing bad shard %s: %s", path, err)
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as rm_err:  # e.g. read-only cache: leave it, never read it
                log.warning("feature cache: could not remove %s: %s", path, rm_err)
                self._seen.setdefault(path.parent.name, set()).add(path.name)
            return None, []
        return shard, [raw[i : i + KEY_BYTES] for i in range(0, len(raw), KEY_BYTES)]

    def contains(self, keys: Sequence[bytes], feature: str) -> np.ndarray:
        return self.locate(keys, feature)[:, 0] >= 0

    def locate(self, keys: Sequence[bytes], feature: str) -> np.ndarray:
        """(shard, row) of each key's ``feature`` as an (n, 2) array, (-1, -1) where not cached, after a refresh:
        ``read`` takes it (one dict lookup per key for both the check and the read)."""
        self.refresh(feature)
        with self._lock:
            index = self._index[feature]
            flat = np.fromiter(chain.from_iterable(map(index.get, keys, repeat(_NOWHERE))), np.int64, 2 * len(keys))
        return flat.reshape(len(keys), 2)

    def value_shape(self, key: bytes, feature: str) -> tuple:
        """The shape of one cached value of ``feature`` (that of ``key``'s shard: all shards of a feature agree)."""
        with self._lock:
            return self._shards[feature][self._index[feature][key][0]].shape

    def get(self, keys: Sequence[bytes], feature: str, out: np.ndarray | None = None, rows_fn=None) -> np.ndarray:
        """Cached values of ``keys`` in order (float features as float32). Raises CacheMiss if any is missing.
        ``out`` and ``rows_fn``: see ``read``."""
        if not len(keys):
            raise ValueError("get() needs at least one key")
        with self._lock:
            index = self._index.get(feature, {})
            try:  # (shard, row) of every key, flat: one C-level pass over the dict
                locs = np.fromiter(chain.from_iterable(map(index.__getitem__, keys)), np.int64, 2 * len(keys))
            except KeyError as err:
                raise CacheMiss(f"{feature}: a key is not cached") from err
            return self.read(locs.reshape(len(keys), 2), feature, out, rows_fn)

    def read(self, locs: np.ndarray, feature: str, out: np.ndarray | None = None, rows_fn=None) -> np.ndarray:
        """The values at ``locs`` ((n, 2) (shard, row), from ``locate``) in order (float features as float32).
        Raises CacheMiss if one is not cached or its shard was dropped since.

        ``out`` (n, *value shape), e.g. a view into a larger array, receives the values instead of a new array;
        ``rows_fn`` maps each block of rows read (float32, in cache order; the block is the caller's to overwrite)
        to what is written (e.g. rows scaled to norm 1: moee_exp.scoring.fuse.SumSink), so a caller's transform costs no
        second pass over memory.
        """
        if not len(locs):
            raise ValueError("read() needs at least one location")
        with self._lock:
            shards = self._shards.get(feature, [])
            if locs[:, 0].min() < 0:
                raise CacheMiss(f"{feature}: a key is not cached")
            # Each shard's rows are read in file order, GATHER_ROWS at a time, from the shard's kept mapping: in
            # order, a step's source pages are neighbours (and a text asked for twice is read from the CPU's cache).
            order = np.argsort(locs[:, 0] * (1 << 40) + locs[:, 1], kind="stable")
            parts = np.split(order, np.flatnonzero(np.diff(locs[order, 0])) + 1)
            first = None
            for part in parts:
                s = int(locs[part[0], 0])
                values = self._values(feature, s)
                if first is None:
                    first = shards[s]
                    if out is None:
                        kind = np.float32 if first.dtype.kind == "f" else first.dtype
                        out = np.empty((len(locs), *first.shape), kind)
                    elif out.shape != (len(locs), *first.shape):
                        raise ValueError(f"out has shape {out.shape}, not {(len(locs), *first.shape)}")
                elif shards[s].shape != first.shape:
                    self._bad(feature, s, f"value shape {shards[s].shape} differs from {first.shape}")
                rows = locs[part, 1]
                for j in range(0, len(part), GATHER_ROWS):  # (np.take would copy the whole strided field first)
                    block = values[rows[j : j + GATHER_ROWS]]
                    out[part[j : j + GATHER_ROWS]] = block if rows_fn is None else rows_fn(block.astype(np.float32, copy=False))
            return out

    def _values(self, feature: str, s: int) -> np.ndarray:
        """Shard ``s``'s values, memory-mapped once and kept; a shard dropped or unreadable is a CacheMiss."""
        shards = self._shards.get(feature, [])
        shard = shards[s] if s < len(shards) else None
        if shard is None:
            raise CacheMiss(f"{feature}: a shard was dropped")
        if shard.values is None:
            try:
                values = np.asarray(np.load(shard.path, mmap_mode="r", allow_pickle=False)["value"])
                if values.shape[1:] != tuple(shard.shape):
                    raise ValueError(f"value shape {values.shape[1:]} differs from {shard.shape}")
            except (OSError, ValueError) as err:
                self._bad(feature, s, err)
            shard.values = values
        return shard.values

    def _bad(self, feature: str, s: int, why) -> None:
        shard = self._shards[feature][s]
        log.warning("feature cache: dropping shard %s: %s", shard.path, why)
        self._drop(feature, s)
        raise CacheMiss(f"{feature}: shard {shard.path.name} unreadable")

    def _drop(self, feature: str, s: int) -> None:
        shard = self._shards[feature][s]
        self._shards[feature][s] = None
        self._index[feature] = {k: loc for k, loc in self._index[feature].items() if loc[0] != s}
        self._seen[feature].discard(shard.path.name)

    # -- writing ------------------------------------------------------------------------------------------------

    def put(self, keys: Sequence[bytes], feature: str, values: np.ndarray) -> int:
        """Store the values of keys not cached yet as one new shard; returns how many were written.

        Float values are stored in the namespace's dtype (float16 falls back to float32 for a feature whose values
        float16 cannot hold). A write that fails (disk full, read-only dir) is logged; the job goes on.
        """
        values = np.asarray(values)
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values")
        self.refresh(feature)
        with self._lock:
            index = self._index[feature]
            fresh: dict[bytes, int] = {}
            for i, k in enumerate(keys):
                if k not in index and k not in fresh:
                    fresh[k] = i
            if not fresh:
                return 0
            rows = values[list(fresh.values())]
            if rows.dtype.kind == "f":
                stored = rows.astype(self.dtype)
                if not np.isfinite(stored).all():  # float16 overflow
                    log.warning("feature cache: %s does not fit in %s; storing it as float32", feature, self.dtype)
                    stored = rows.astype(np.float32)
                rows = stored
            records = np.empty(len(rows), [("key", f"V{KEY_BYTES}"), ("value", rows.dtype, rows.shape[1:])])
            records["key"] = np.frombuffer(b"".join(fresh), dtype=f"V{KEY_BYTES}")
            records["value"] = rows
            try:
                path = self._write(feature, records)
            except (NotADirectoryError, FileExistsError) as err:  # a file where the cache's dir must be
                raise _not_a_dir(self.path / feature, err) from None
            except OSError as err:
                log.warning("feature cache: could not write %s under %s: %s", feature, self.path, err)
                return 0
            heartbeat()
            shards = self._shards[feature]
            self._seen[feature].add(path.name)
            n = len(shards)
            shards.append(_Shard(path, rows.dtype, rows.shape[1:]))
            for row, k in enumerate(fresh):
                index.setdefault(k, (n, row))
            return len(fresh)

    def _write(self, feature: str, records: np.ndarray) -> Path:
        folder = self.path / feature
        folder.mkdir(parents=True, exist_ok=True)
        meta = self.path / "meta.json"
        if not meta.exists():
            atomic_write(meta, json.dumps(self.identity, indent=1, sort_keys=True, default=str))
        tmp = folder / f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.npy"
        try:
            with open(tmp, "wb") as f:
                writer = _HashingWriter(f)
                np.lib.format.write_array(writer, records, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            path = folder / f"{writer.h.hexdigest()[:32]}.npy"
            os.replace(tmp, path)  # atomic: readers see the whole shard or none of it
        except BaseException:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        return path

    @contextlib.contextmanager
    def extract_lock(self):
        """Held while extracting and storing missed texts: concurrent jobs on this namespace take turns.

        The holder writes who it is (host, pid, since) into the lock file and refreshes its mtime every few seconds
        while its work moves on (``heartbeat()``: each extracted batch; a thread that merely runs proves nothing).
        A waiter logs the holder within seconds and then every minute; it takes over (goes on without the lock: the
        cache's writes are atomic, so at worst a text is extracted twice) from a holder whose pid is gone on this
        host or whose lock was not refreshed for ``lock_stale_s`` (hung, stopped, or on a dead node), so no wait
        outlasts the holder's progress by more than ``lock_stale_s``; after ``lock_wait_s`` (0: no limit beyond
        that) it gives up with LockWaitTimeout."""
        if not self.lock or fcntl is None:
            yield
            return
        path = self.path / ".extract.lock"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            f = open(path, "a+b")  # noqa: SIM115 (closed below)
        except (NotADirectoryError, FileExistsError) as err:
            raise _not_a_dir(self.path, err) from None
        except OSError as err:
            log.warning("feature cache: no extraction lock under %s (%s); jobs may extract the same texts", self.path, err)
            yield
            return
        stop = threading.Event()
        try:
            if self._acquire(f, path):
                _claim(f, path, stop, self.lock_stale_s)
            yield
        finally:
            stop.set()
            f.close()  # releases the lock

    def _acquire(self, f, path: Path) -> bool:
        """Take the lock (True), or take over from a dead / hung holder (False); raise LockWaitTimeout at the limit."""
        start = time.monotonic()
        next_log = start + LOCK_FIRST_LOG_S
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            except OSError as err:  # e.g. a filesystem without flock
                log.warning("feature cache: flock failed under %s (%s); jobs may extract the same texts", self.path, err)
                return False
            holder, age = _holder(path)
            who = (f"{holder.get('host')} pid {holder.get('pid')} since {holder.get('since')}" if holder
                   else "a job that did not say who it is")

            gone = holder.get("host") == socket.gethostname() and not pid_alive(int(holder.get("pid") or 0))
            if gone or age > self.lock_stale_s:
                why = "is gone" if gone else f"has not refreshed it for {age:.0f} s (cache.lock_stale_s={self.lock_stale_s})"
                log.warning("feature cache: the extraction lock %s is held by %s, which %s: taking over (extracting "
                            "without it)", path, who, why)
                return False
            waited = time.monotonic() - start
            if self.lock_wait_s and waited >= self.lock_wait_s:
                raise LockWaitTimeout(
                    f"gave up after {waited:.0f} s waiting for the feature cache's extraction lock {path}, held by "
                    f"{who}: raise cache.lock_wait_s (0 waits for ever) or end that job"
                )
            if time.monotonic() >= next_log:
                log.warning("feature cache: waiting for the extraction lock %s, held by %s (waited %.0f s)", path, who,
                            waited)
                next_log = time.monotonic() + LOCK_LOG_EVERY_S
            time.sleep(LOCK_POLL_S)

    def nbytes(self) -> int:
        """Bytes of the shards on disk (all features)."""
        return sum(p.stat().st_size for p in self.path.glob("*/*.npy"))


def _claim(f, path: Path, stop: threading.Event, stale_s: float) -> None:
    """Write who holds the lock into it, and until ``stop`` is set refresh its mtime whenever this process's work
    moved on since the last refresh (``heartbeat()``). The daemon thread that does it proves nothing by itself: a
    holder whose main thread is stuck stops refreshing and goes stale."""
    info = {"host": socket.gethostname(), "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}
    try:
        f.seek(0)
        f.truncate()
        f.write(json.dumps(info).encode())
        f.flush()
    except OSError:
        return

    def refresh():
        seen = _progress[0]
        while not stop.wait(max(0.5, min(30.0, stale_s / 5))):
            if _progress[0] == seen:
                continue  # no progress since the last refresh: let the lock age
            seen = _progress[0]
            with contextlib.suppress(OSError):
                os.utime(path)

    threading.Thread(target=refresh, name="moee-lock-refresh", daemon=True).start()


def _holder(path: Path) -> tuple[dict, float]:
    """Who holds the lock (what it wrote; {} if unknown) and seconds since it last refreshed it."""
    try:
        age = time.time() - path.stat().st_mtime
        info = json.loads(path.read_bytes() or b"{}")
    except (OSError, ValueError):
        return {}, 0.0
    return (info if isinstance(info, dict) else {}), age


def _check_feature(feature: str) -> None:
    if not _FEATURE_NAME.match(feature):
        raise ValueError(f"feature name {feature!r} must be letters, digits and '_'")


def _remove_if_stale(path: Path) -> None:
    try:
        if time.time() - path.stat().st_mtime > _STALE_TMP_S:
            path.unlink()
    except OSError:
        pass


class FeatureCache:
    """The cache root: one Namespace per identity, kept for the life of the object."""

    def __init__(self, root: str | Path, dtype: str = "float32", lock: bool = True, lock_stale_s: float = 300,
                 lock_wait_s: float = 0):
        if dtype not in CACHE_DTYPES:
            raise ValueError(f"cache.dtype={dtype!r} is not one of {', '.join(CACHE_DTYPES)}")
        self.root, self.dtype, self.lock = Path(root).expanduser(), dtype, lock
        self.lock_stale_s, self.lock_wait_s = lock_stale_s, lock_wait_s
        self._namespaces: dict[str, Namespace] = {}
        self._lock = threading.Lock()

    def namespace(self, identity: Mapping) -> Namespace:
        identity = {**identity, "cache_dtype": self.dtype}
        name = identity_hash(identity)
        with self._lock:
            if name not in self._namespaces:
                self._namespaces[name] = Namespace(self.root / name, identity, self.dtype, self.lock,
                                                   self.lock_stale_s, self.lock_wait_s)
            return self._namespaces[name]


_caches: dict[tuple, FeatureCache] = {}


def open_cache(cfg: CacheConfig | Mapping | None) -> FeatureCache | None:
    """The process-wide FeatureCache for a cache config (or a mapping of its fields: ``{"dir": ...}``); None when off.

    The same instance (and so the same in-memory index) serves every job of a sweep run in this process.
    """
    if cfg is None:
        return None
    if not isinstance(cfg, CacheConfig):
        cfg = CacheConfig(**cfg)
    if not cfg.enabled:
        return None
    root = Path(str(cfg.dir)).expanduser().absolute()
    key = (str(root), str(cfg.dtype), bool(cfg.lock), float(cfg.lock_stale_s), float(cfg.lock_wait_s))
    if key not in _caches:
        _caches[key] = FeatureCache(root, *key[1:])
        if not writable(root):  # a lab's shared cache: serves every job whose features it holds
            log.info("feature cache %s is read-only: features are read from it; a job that misses one stops", root)
    return _caches[key]
