"""On-disk result cache (diskcache) with keys that cover everything that changes a result.

Keys are SHA-256 digests of a JSON rendering of their parts (model fingerprint, data fingerprint,
plan, every parameter). A value that cannot be read back (corrupt or truncated entry, or an
unpickling error after a code change) is deleted and recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import diskcache

log = logging.getLogger(__name__)
T = TypeVar("T")
_MISSING = object()
_caches: dict[Path, diskcache.Cache] = {}

# bumped whenever a computation changes in a way that invalidates stored results
CACHE_VERSION = 2


def cache_dir() -> Path:
    """The cache directory: ``$PRUNEVIZ_CACHE_DIR`` or ``cache/`` beside the package; created 0700.

    Cached values are pickles, so only the app's own user may read or write them.
    """
    root = Path(os.environ.get("PRUNEVIZ_CACHE_DIR") or Path(__file__).resolve().parent.parent / "cache")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.chmod(0o700)
    return root


def results_cache() -> diskcache.Cache:
    """The process-wide diskcache instance under :func:`cache_dir` (thread-safe).

    A cache whose database cannot be read (truncated or overwritten) is moved aside to
    ``results.corrupt-<time>`` with a warning and a fresh one is started: results are recomputed, and the
    old files stay for inspection.
    """
    path = cache_dir() / "results"
    if path not in _caches:
        try:
            cache = diskcache.Cache(str(path))
            len(cache)  # reads the database: a damaged one fails here rather than mid-computation
        except sqlite3.DatabaseError as error:
            aside = path.with_name(f"results.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            log.warning("The result cache at %s is unreadable (%s); moved it to %s and starting a new one.", path, error, aside)
            path.rename(aside)
            cache = diskcache.Cache(str(path))
        _caches[path] = cache
    return _caches[path]


def make_key(*parts: Any) -> str:
    """A stable digest of JSON-serialisable ``parts`` (objects are rendered with ``str``)."""
    text = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cached(key: str, compute: Callable[[], T], use_cache: bool = True) -> tuple[T, bool]:
    """Return ``(value, hit)``: the cached value under ``key``, or compute, store and return it.

    Args:
        key: from :func:`make_key`.
        compute: builds the value (should be picklable: dataclasses, DataFrames, dicts).
        use_cache: ``False`` bypasses the cache entirely (neither read nor written).

    Returns:
        the value, and whether it came from the cache.
    """
    if not use_cache:
        return compute(), False
    cache = results_cache()
    try:
        value = cache.get(key, default=_MISSING)
    except Exception as error:  # corrupt, truncated or unreadable entry: drop it and recompute
        log.warning("Cache entry %s is unreadable (%s); recomputing it.", key[:12], error)
        cache.delete(key)
        value = _MISSING
    if value is not _MISSING:
        return value, True
    value = compute()
    cache.set(key, value)
    return value, False


def read_partial(key: str) -> Any | None:
    """A partial result saved by :func:`write_partial` (``None`` if absent or unreadable; an unreadable one is deleted)."""
    cache = results_cache()
    try:
        return cache.get(key, default=None)
    except Exception as error:  # corrupt or truncated entry: start over rather than trust it
        log.warning("Checkpoint %s is unreadable (%s); starting over.", key[:12], error)
        cache.delete(key)
        return None


def write_partial(key: str, value: Any) -> None:
    """Save a partial result (a checkpoint of long work) under ``key``, replacing the previous one."""
    results_cache().set(key, value)


def drop_partial(key: str) -> None:
    """Delete the partial result under ``key`` (the work it belonged to has finished)."""
    results_cache().delete(key)


def file_fingerprint(path: Path, whole: bool = False) -> str:
    """Digest of a file: its size plus its first and last MiB (or all of it with ``whole=True``)."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as handle:
        if whole or size <= 2 << 20:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        else:
            digest.update(handle.read(1 << 20))
            handle.seek(-(1 << 20), os.SEEK_END)
            digest.update(handle.read())
    return digest.hexdigest()[:16]
