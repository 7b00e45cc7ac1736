"""On-disk result cache (diskcache) with keys that cover everything that changes a result.

Keys are SHA-256 digests of a JSON rendering of their parts (model fingerprint, data fingerprint,
plan, every parameter). Values are stored as pickles behind an HMAC of their key and pickle under a
secret only this installation holds, checked before anything is unpickled. A value that cannot be read
back (corrupt, truncated, altered or swapped entry, one this installation did not write, or an
unpickling error after a code change) is deleted and recomputed, never trusted; a database found
damaged, at start-up or while the app runs, is moved aside and replaced by an empty one. A cache
directory owned by another user is not used (see :func:`cache_dir`).
"""

from __future__ import annotations

import copy
import errno
import hashlib
import hmac
import inspect
import json
import logging
import os
import pickle
import secrets
import sqlite3
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

import diskcache
import torch

from . import inflight
from .digest import tensor_digest
from .errors import SettingError
from .gating import stand_in_digest
from .plan import PruningPlan, Unit

log = logging.getLogger(__name__)
T = TypeVar("T")
_MISSING = object()
_caches: dict[Path, diskcache.Cache] = {}
# inode of the cache.db each cache in _caches opened: tells whether another process has replaced it since
_opened: dict[Path, int | None] = {}
# guards _caches: threads of the app's sessions may find a damaged database at the same moment
_caches_lock = threading.RLock()
DIGEST_BYTES = 32  # SHA-256
# callback parameters that a call waiting for the same computation in another thread hears (cached_call)
RELAYED_CALLBACKS = ("progress", "partial")

# the checkout pruneviz runs from: pruneviz/core/cache.py is two folders below it
REPOSITORY = Path(__file__).resolve().parents[2]
# bumped whenever a computation changes in a way that invalidates stored results (3: values are sealed; 4: sealed with
# a keyed HMAC bound to their key; 5: EvaluationResult says plan and recovery, not prune and recover)
CACHE_VERSION = 5
SECRET_FILE = "secret.key"
SECRET_BYTES = 32
_secrets: dict[Path, bytes] = {}  # the secret of each cache directory, read once
# the cache directories found unsafe (owned by another user, or writable by others) and already reported
_refused: set[Path] = set()


def configured_cache_dir() -> Path:
    """Where the cache is configured to be (``$PRUNEVIZ_CACHE_DIR`` or ``cache/`` at the top of the checkout), without
    creating or checking it (see :func:`cache_dir`)."""
    return Path(os.environ.get("PRUNEVIZ_CACHE_DIR") or REPOSITORY / "cache")


def cache_dir() -> Path:
    """The cache directory: ``$PRUNEVIZ_CACHE_DIR`` or ``cache/`` at the top of the checkout; created 0700.

    Cached values are pickles, so only the app's own user may read or write them. A directory owned by
    another user is not used (its owner could plant entries and replace the secret that seals them): the
    cache moves to a private one, ``pruneviz-cache-<uid>`` in the system's temporary folder, with a warning.

    Raises:
        SettingError: the directory cannot be made (a file is in the way, no permission), or the private directory
            is not this user's either.
    """
    root = configured_cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        raise SettingError(
            f"The cache directory {root} cannot be used ({error.strerror or error}); set PRUNEVIZ_CACHE_DIR to a folder you can write."
        ) from None
    if root.stat().st_uid == os.geteuid():
        root.chmod(0o700)
        return root
    private = Path(tempfile.gettempdir()) / f"pruneviz-cache-{os.geteuid()}"
    private.mkdir(exist_ok=True, mode=0o700)
    if private.stat().st_uid != os.geteuid():
        raise SettingError(
            f"Neither the cache directory {root} nor {private} belongs to this user, so neither can be trusted; "
            "set PRUNEVIZ_CACHE_DIR to a folder you own."
        )
    private.chmod(0o700)
    if root not in _refused:
        _refused.add(root)
        log.warning("The cache directory %s belongs to another user, who could plant entries in it; using %s instead.", root, private)
    return private


def _database_id(path: Path) -> int | None:
    """The inode of the cache directory ``path``'s database file (``None`` when there is none)."""
    try:
        return (path / "cache.db").stat().st_ino
    except FileNotFoundError:
        return None


# sqlite errors that are not damage: contention, a misuse, or the machine; moving the files aside would not mend them
_NOT_DAMAGE = ("locked", "busy", "unable to open", "disk i/o", "readonly", "read-only", "full", "interrupted")


def _is_damage(error: sqlite3.DatabaseError) -> bool:
    """Whether sqlite's ``error`` means a damaged database: a malformed file, one that is not a database, or a
    schema that is not diskcache's ("no such table", "no such column", a constraint it never declared).

    Not damage: a locked or busy database, a misuse (``ProgrammingError``, ``InterfaceError``: a closed
    connection), a file the user may not open, a disk I/O error or a full disk (:data:`_NOT_DAMAGE`).
    """
    if isinstance(error, (sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        return False
    return not any(marker in str(error).lower() for marker in _NOT_DAMAGE)


def _move_aside(path: Path, error: Exception) -> diskcache.Cache:
    """Move the damaged cache directory ``path`` to ``results.corrupt-<time>-<id>`` (kept for inspection); open a fresh one there."""
    aside = path.with_name(f"results.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
    try:
        path.rename(aside)
        log.warning("The result cache at %s is unreadable (%s); moved it to %s and starting a new one.", path, error, aside)
    except FileNotFoundError:  # another process moved it first
        log.warning("The result cache at %s is unreadable (%s); starting a new one.", path, error)
    return diskcache.Cache(str(path))


def results_cache() -> diskcache.Cache:
    """The process-wide diskcache instance under :func:`cache_dir` (thread-safe).

    A cache whose database cannot be read (truncated or overwritten) is moved aside to
    ``results.corrupt-<time>-<id>`` with a warning and a fresh one is started: results are recomputed,
    and the old files stay for inspection.
    """
    path = cache_dir() / "results"
    with _caches_lock:
        if path not in _caches:
            cache = None
            try:
                cache = diskcache.Cache(str(path))
                len(cache)  # reads the database: a damaged one fails here rather than mid-computation
            except sqlite3.DatabaseError as error:
                if not _is_damage(error):
                    raise
                if cache is not None:
                    cache.close()
                cache = _move_aside(path, error)
            _caches[path] = cache
            _opened[path] = _database_id(path)
        return _caches[path]


def _on_results(operation: Callable[[diskcache.Cache], T]) -> T:
    """Run ``operation`` on the result cache; if its database turns out damaged (e.g. a file truncated while
    the app runs), move it aside and run ``operation`` on a fresh one.

    Another process (a ``torchrun`` rank, the CLI beside the app) may have found the damage first: when
    the database file is no longer the one this process opened, the new one is opened, not moved aside.

    Raises:
        sqlite3.DatabaseError: a subclass, such as a locked database (not damage: nothing is moved).
    """
    results = results_cache()
    try:
        return operation(results)
    except sqlite3.DatabaseError as error:
        if not _is_damage(error):
            raise
        with _caches_lock:
            path = Path(results.directory)
            if _caches.get(path) is results:  # not yet replaced by another thread that hit the same damage
                results.close()
                replaced = _database_id(path) != _opened.get(path)
                _caches[path] = diskcache.Cache(str(path)) if replaced else _move_aside(path, error)
                _opened[path] = _database_id(path)
            fresh = _caches[path]
        return operation(fresh)


def _secret() -> bytes:
    """This installation's 32-byte secret: ``secret.key`` in the cache directory, created once, readable by its owner only.

    Entries are sealed with it, so a pickle that this installation did not write is never unpickled, whoever
    could write into the cache directory.
    """
    path = cache_dir() / SECRET_FILE
    if path in _secrets:
        return _secrets[path]
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_bytes()
        if len(secret) == SECRET_BYTES:
            return _secrets.setdefault(path, secret)
        path.unlink(missing_ok=True)  # damaged: entries sealed with it are recomputed under a new one
        return _secret()
    secret = secrets.token_bytes(SECRET_BYTES)
    with os.fdopen(handle, "wb") as out:
        out.write(secret)
    return _secrets.setdefault(path, secret)


def _seal(key: str, value: Any) -> bytes:
    """``value`` pickled, behind an HMAC-SHA256 of the key and the pickle under this installation's secret
    (RFC 2104): an entry altered on disk, moved under another key, or not written here is detected when read."""
    blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return hmac.new(_secret(), key.encode() + b"\0" + blob, hashlib.sha256).digest() + blob


def _unseal(key: str, sealed: Any) -> Any:
    """The value :func:`_seal` stored under ``key``; nothing is unpickled before its seal is checked.

    Raises:
        ValueError: the entry is not a sealed value, or its seal does not match (altered, truncated, stored
            under another key, or written without this installation's secret).
    """
    if not isinstance(sealed, bytes) or len(sealed) < DIGEST_BYTES:
        raise ValueError("it is not a sealed value")
    expected = hmac.new(_secret(), key.encode() + b"\0" + sealed[DIGEST_BYTES:], hashlib.sha256).digest()
    if not hmac.compare_digest(expected, sealed[:DIGEST_BYTES]):
        raise ValueError("its checksum does not match its key and contents (altered, moved, or not written by this installation)")
    return pickle.loads(sealed[DIGEST_BYTES:])


def _read(key: str, what: str, then: str) -> Any:
    """The value stored under ``key``, or ``_MISSING`` when absent; an unreadable one is deleted with a warning
    naming ``what`` it was and what happens ``then``."""
    try:
        sealed = _on_results(lambda results: results.get(key, default=_MISSING))
        return sealed if sealed is _MISSING else _unseal(key, sealed)
    except sqlite3.OperationalError as error:
        if not _disk_full(error):
            raise
        _warn_full(error)
        return _MISSING
    except sqlite3.DatabaseError:  # locked or busy (damage was handled by _on_results): the entry itself may be fine
        raise
    except Exception as error:  # corrupt, truncated or altered entry: drop it rather than trust it
        if _disk_full(error):
            _warn_full(error)
            return _MISSING
        log.warning("%s %s is unreadable (%s); %s.", what, key[:12], error, then)
        _on_results(lambda results: results.delete(key))
        return _MISSING


def _write(key: str, value: Any) -> None:
    """Store ``value`` under ``key``, sealed (:func:`_seal`); on a full disk, warn and keep going without storing it."""
    sealed = _seal(key, value)
    try:
        _on_results(lambda results: results.set(key, sealed))
    except (sqlite3.OperationalError, OSError) as error:
        if not _disk_full(error):
            raise
        _warn_full(error)


def _disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the cache's disk is full (sqlite's words, or ENOSPC writing a value file)."""
    if isinstance(error, sqlite3.OperationalError):
        return "full" in str(error)
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def _warn_full(error: BaseException) -> None:
    """Say that results are computed but not kept, as long as the cache's disk stays full."""
    log.warning(
        "The result cache in %s has no room (%s): results are computed but not kept; free space there or set "
        "PRUNEVIZ_CACHE_DIR to a folder with room.", cache_dir(), error,
    )


def make_key(*parts: Any) -> str:
    """A stable digest of JSON-serialisable ``parts`` (objects are rendered with ``str``)."""
    text = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _key_part(name: str, value: Any) -> Any:
    """What of an argument goes into a key: plain values as they are, a model, recovery or dataset by its
    ``fingerprint``, a plan or unit by its canonical string, a tensor or module by a digest of its contents.

    Raises:
        TypeError: the argument cannot be keyed (a callback): name it in ``ignore`` if it cannot change the result.
    """
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (PruningPlan, Unit, torch.dtype)):
        return str(value)
    if isinstance(value, torch.Tensor):
        return tensor_digest([(name, value)], length=32)
    if isinstance(value, torch.nn.Module):
        return stand_in_digest(value)
    if hasattr(value, "fingerprint"):
        return value.fingerprint
    if isinstance(value, Mapping):
        return {str(k): _key_part(f"{name}[{k}]", v) for k, v in sorted(value.items(), key=lambda item: str(item[0]))}
    if isinstance(value, (set, frozenset)):
        return sorted(str(_key_part(name, v)) for v in value)
    if isinstance(value, (list, tuple)):
        return [_key_part(f"{name}[{i}]", v) for i, v in enumerate(value)]
    raise TypeError(
        f"Argument '{name}' ({type(value).__name__}) cannot be part of a cache key; name it in ignore= if it cannot "
        "change the result, or give its type a fingerprint."
    )


def call_key(
    function: Callable, args: tuple = (), kwargs: Mapping[str, Any] | None = None, ignore: Iterable[str] = (), content: Any = ()
) -> str:
    """The cache key of ``function(*args, **kwargs)``, built from the call itself so that no argument can be forgotten.

    Every argument the function receives (defaults included) is in the key as :func:`_key_part` renders it,
    unless named in ``ignore`` (callbacks such as ``progress``, switches such as ``checkpoint`` that cannot
    change the value), together with the function's qualified name and ``content``: digests of what an
    argument only names (a data file's contents under its path).

    Raises:
        TypeError: an argument cannot be keyed and is not ignored; or the arguments do not fit the signature.
    """
    bound = inspect.signature(function).bind(*args, **(kwargs or {}))
    bound.apply_defaults()
    ignored = set(ignore)
    parts = {name: _key_part(name, value) for name, value in bound.arguments.items() if name not in ignored}
    return make_key(f"{function.__module__}.{function.__qualname__}", parts, content)


def cached_call(
    function: Callable[..., T],
    args: tuple = (),
    kwargs: Mapping[str, Any] | None = None,
    use_cache: bool = True,
    ignore: Iterable[str] = (),
    content: Any = (),
) -> tuple[T, bool]:
    """``(function(*args, **kwargs), hit)`` through the cache under :func:`call_key`, computed once per process.

    A call whose result another thread is computing now waits for it instead of computing it again
    (:func:`pruneviz.core.inflight.lead_or_wait`), hearing that computation's ``progress`` and ``partial``
    callbacks through its own meanwhile (so its own ``progress`` may still cancel the wait).

    Raises:
        TypeError: as :func:`call_key`; plus whatever ``function`` raises.
    """
    key = call_key(function, args, kwargs, ignore, content)
    kwargs = dict(kwargs or {})
    parameters = inspect.signature(function).parameters
    callbacks = {name: kwargs.get(name) for name in RELAYED_CALLBACKS if name in parameters}
    return cached(key, lambda relayed=None: function(*args, **kwargs | (relayed or {})), use_cache, callbacks=callbacks)


def cached(
    key: str, compute: Callable[..., T], use_cache: bool = True, callbacks: Mapping[str, Callable | None] | None = None
) -> tuple[T, bool]:
    """Return ``(value, hit)``: the cached value under ``key``, or compute, store and return it.

    Args:
        key: from :func:`make_key`.
        compute: builds the value (should be picklable: dataclasses, DataFrames, dicts).
        use_cache: ``False`` bypasses the cache entirely (neither read nor written).
        callbacks: given, the value is computed once per process (:func:`pruneviz.core.inflight.lead_or_wait`):
            a caller finding ``key`` being computed by another thread waits for it, its ``callbacks`` hearing that
            computation's; ``compute`` then takes those callbacks, as recorders, in a mapping. Only whole results
            (:func:`cached_call`) do this: batches computed once per process could wait on each other in a cycle.

    Returns:
        the value, and whether it came from the cache (or from another thread's computation of it).
    """
    if not use_cache:
        return compute(), False
    while True:
        value = _read(key, "Cache entry", "recomputing it")
        if value is not _MISSING:
            return value, True
        if callbacks is None:
            value = compute()
            _write(key, value)
            return value, False
        with inflight.lead_or_wait(key, callbacks) as flight:
            if flight.finished.is_set():  # another thread's computation ended: its value, or (it failed) look again
                if flight.value is not inflight.NOTHING:
                    # each caller gets its own copy, as from the cache: callers annotate results (from_cache ...)
                    return copy.deepcopy(flight.value), True
                continue
            stored = _read(key, "Cache entry", "recomputing it")  # a leader may have finished since the first look
            if stored is not _MISSING:
                return stored, True
            value = compute({name: flight.recorder(name, own) for name, own in callbacks.items()})
            flight.value = copy.deepcopy(value)  # taken before the leader's caller can change its own
            _write(key, value)
            return value, False


def read_partial(key: str) -> Any | None:
    """A partial result saved by :func:`write_partial` (``None`` if absent or unreadable; an unreadable one is deleted)."""
    value = _read(key, "Checkpoint", "starting over")
    return None if value is _MISSING else value


def write_partial(key: str, value: Any) -> None:
    """Save a partial result (a checkpoint of long work) under ``key``, replacing the previous one."""
    _write(key, value)


def drop_partial(key: str) -> None:
    """Delete the partial result under ``key`` (the work it belonged to has finished)."""
    _on_results(lambda results: results.delete(key))


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
