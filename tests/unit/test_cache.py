"""Result cache: hits, corrupt or forged entries, damaged databases, fingerprints (tiny models).

The embedded model's evaluations and influences through the cache: ``tests/real/test_cache_real.py``.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, tiny_llama
from helpers import GARBAGE, corrupt_entry

from pruneviz.core import cache
from pruneviz.core.errors import SettingError
from pruneviz.core.loading import from_modules


def _flip_a_late_byte(stored: bytes) -> bytes:
    """One bit changed 10 bytes before the end, inside the array's data: the pickle still loads, with another number in it."""
    return stored[:-10] + bytes([stored[-10] ^ 1]) + stored[-9:]


def test_cache_dir_from_environment(fresh_cache, tmp_path):
    assert cache.cache_dir() == tmp_path / "cache"
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    assert Path(fresh_cache.directory) == tmp_path / "cache" / "results"


def test_cached_hit_and_bypass(fresh_cache):
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    assert cache.cached("k1", compute) == ({"value": 1}, False)
    assert cache.cached("k1", compute) == ({"value": 1}, True)
    assert cache.cached("k1", compute, use_cache=False) == ({"value": 2}, False)
    assert cache.cached("k2", compute, use_cache=False) == ({"value": 3}, False)
    assert "k2" not in fresh_cache  # a bypass neither reads nor writes


@pytest.mark.parametrize("size", [10, 200_000])  # stored inside sqlite / in a separate file
def test_corrupt_entry_is_recomputed(fresh_cache, size):
    payload = np.arange(size, dtype=np.float64)
    key = cache.make_key("corrupt-test", size)
    value, hit = cache.cached(key, lambda: payload.copy())
    assert not hit
    where = corrupt_entry(fresh_cache, key)
    assert where == ("file" if size > 1000 else "sqlite")
    calls = []
    value, hit = cache.cached(key, lambda: calls.append(1) or payload * 2)
    assert not hit and calls == [1]
    np.testing.assert_array_equal(value, payload * 2)
    # the recomputed value replaced the corrupt one
    value, hit = cache.cached(key, lambda: pytest.fail("should be a hit"))
    assert hit
    np.testing.assert_array_equal(value, payload * 2)


@pytest.mark.parametrize("size", [10, 200_000])
def test_an_entry_altered_on_disk_is_recomputed_not_trusted(fresh_cache, size, caplog):
    payload = np.arange(size, dtype=np.float64) + 0.5
    key = cache.make_key("altered", size)
    cache.cached(key, lambda: payload.copy())
    corrupt_entry(fresh_cache, key, _flip_a_late_byte)
    value, hit = cache.cached(key, lambda: payload.copy())
    assert not hit and "checksum does not match" in caplog.text
    np.testing.assert_array_equal(value, payload)


def test_a_database_damaged_while_running_is_moved_aside_and_work_goes_on(fresh_cache, monkeypatch, caplog):
    # what sqlite raises once the database file is truncated under a running app (truncating it here, under
    # sqlite's memory map, would kill the test process)
    def malformed(*args, **kwargs):
        raise sqlite3.DatabaseError("database disk image is malformed")

    cache.cached("before", lambda: 1)
    monkeypatch.setattr(fresh_cache, "get", malformed)
    assert cache.cached("after", lambda: 42) == (42, False)
    assert cache.cached("after", lambda: 0) == (42, True), "the fresh database serves the next runs"
    assert cache.results_cache() is not fresh_cache
    root = Path(fresh_cache.directory).parent
    assert len([p for p in root.iterdir() if p.name.startswith("results.corrupt-")]) == 1
    assert "starting a new one" in caplog.text


@pytest.mark.parametrize("error", [sqlite3.OperationalError("database is locked"), sqlite3.ProgrammingError("closed")])
@pytest.mark.parametrize("operation", ["get", "set"])
def test_a_locked_or_misused_database_is_not_taken_for_a_damaged_one(fresh_cache, monkeypatch, error, operation):
    def failing(*args, **kwargs):
        raise error

    cache.write_partial("k", 1)
    with monkeypatch.context() as patched, pytest.raises(type(error)):
        patched.setattr(fresh_cache, operation, failing)
        cache.cached("k", lambda: 2) if operation == "get" else cache.write_partial("k", 3)
    assert cache.results_cache() is fresh_cache and cache.read_partial("k") == 1, "nothing was moved or deleted"


def test_a_database_another_process_already_replaced_is_opened_not_moved(fresh_cache, monkeypatch):
    def malformed(*args, **kwargs):
        raise sqlite3.DatabaseError("database disk image is malformed")

    path = Path(fresh_cache.directory)
    # what another process did on finding the damage: moved the files aside and started afresh with its own entry
    path.rename(path.with_name("results.corrupt-elsewhere"))
    other = cache.diskcache.Cache(str(path))
    other.set("theirs", cache._seal("theirs", 7))
    other.close()
    monkeypatch.setattr(fresh_cache, "get", malformed)
    assert cache.cached("theirs", lambda: 0) == (7, True)
    assert sorted(p.name for p in path.parent.iterdir()) == ["results", "results.corrupt-elsewhere", cache.SECRET_FILE]


def test_unreadable_cache_database_is_moved_aside_and_replaced(tmp_path, monkeypatch, caplog):
    root = tmp_path / "broken"
    (root / "results").mkdir(parents=True)
    (root / "results" / "cache.db").write_bytes(GARBAGE * 300)
    monkeypatch.setenv("PRUNEVIZ_CACHE_DIR", str(root))
    results = cache.results_cache()
    try:
        assert cache.cached("k", lambda: 41 + 1) == (42, False)
        assert cache.cached("k", lambda: 0) == (42, True)
    finally:
        results.close()
    aside = [p.name for p in root.iterdir() if p.name.startswith("results.corrupt-")]
    assert len(aside) == 1 and (root / aside[0] / "cache.db").read_bytes() == GARBAGE * 300
    assert "unreadable" in caplog.text and "starting a new one" in caplog.text


def test_missing_value_file_is_a_miss(fresh_cache):
    key = cache.make_key("missing-file")
    cache.cached(key, lambda: np.zeros(100_000))
    with sqlite3.connect(Path(fresh_cache.directory) / "cache.db") as db:
        (filename,) = db.execute("SELECT filename FROM Cache WHERE key = ?", (key,)).fetchone()
    (Path(fresh_cache.directory) / filename).unlink()
    value, hit = cache.cached(key, lambda: np.ones(3))
    assert not hit and value.tolist() == [1, 1, 1]


def test_make_key():
    assert cache.make_key("a", 1, {"x": 1, "y": 2}) == cache.make_key("a", 1, {"y": 2, "x": 1})
    assert cache.make_key("a", 1) != cache.make_key("a", 2) != cache.make_key("b", 2)
    assert cache.make_key("a", None) != cache.make_key("a", "")
    assert len(cache.make_key("a")) == 64


def test_file_fingerprint(tmp_path):
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(b"abc")
    big.write_bytes(bytes(3 << 20))
    first = cache.file_fingerprint(big)
    small_first = cache.file_fingerprint(small)
    small.write_bytes(b"abd")
    assert cache.file_fingerprint(small) != small_first
    data = bytearray(big.read_bytes())
    data[-1] = 1  # the last MiB is hashed
    big.write_bytes(bytes(data))
    assert cache.file_fingerprint(big) != first


def test_model_fingerprint_depends_on_weights():
    a = from_modules("a", tiny_llama(seed=0), None)
    b = from_modules("b", tiny_llama(seed=0), None)
    c = from_modules("c", tiny_llama(seed=1), None)
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_the_default_cache_is_the_checkouts_cache_folder(monkeypatch):
    monkeypatch.delenv("PRUNEVIZ_CACHE_DIR")
    assert cache.cache_dir() == REPO / "cache" and (REPO / "cache" / ".gitkeep").exists()


@pytest.mark.parametrize(
    "damage",
    [
        "DROP TABLE Cache",  # no such table
        "ALTER TABLE Cache RENAME COLUMN value TO v",  # no such column
        "DROP TABLE Cache; CREATE TABLE Cache (rowid INTEGER PRIMARY KEY, key BLOB NOT NULL CHECK (0))",  # never writable
    ],
    ids=["table-dropped", "column-renamed", "constraint-added"],
)
def test_a_database_with_a_damaged_schema_is_moved_aside_and_recomputed(fresh_cache, damage, caplog):
    cache.cached("before", lambda: 1)
    database = Path(fresh_cache.directory) / "cache.db"
    fresh_cache.close()
    with sqlite3.connect(database) as db:
        db.executescript(damage)
    assert cache.cached("after", lambda: 42) == (42, False)
    assert cache.cached("after", lambda: 0) == (42, True), "the fresh database serves the next runs"
    root = Path(fresh_cache.directory).parent
    assert len([p for p in root.iterdir() if p.name.startswith("results.corrupt-")]) == 1
    assert "starting a new one" in caplog.text


def test_an_unopenable_or_full_database_is_not_taken_for_damage():
    for message in ("database is locked", "unable to open database file", "disk I/O error", "database or disk is full",
                    "attempt to write a readonly database"):
        assert not cache._is_damage(sqlite3.OperationalError(message)), message
    assert not cache._is_damage(sqlite3.ProgrammingError("Cannot operate on a closed database."))
    for message in ("database disk image is malformed", "file is not a database", "no such table: Cache", "no such column: v"):
        assert cache._is_damage(sqlite3.OperationalError(message) if "no such" in message else sqlite3.DatabaseError(message))


def test_swapped_or_forged_entries_are_recomputed_not_unpickled(fresh_cache, caplog):
    import pickle

    perplexity, accuracy = cache.make_key("perplexity"), cache.make_key("mmlu")
    cache.cached(perplexity, lambda: 17.1)
    cache.cached(accuracy, lambda: 0.29)
    # two entries swapped on disk: each seal is bound to its own key
    stored = {key: fresh_cache[key] for key in (perplexity, accuracy)}
    fresh_cache[perplexity], fresh_cache[accuracy] = stored[accuracy], stored[perplexity]
    assert cache.cached(perplexity, lambda: 17.2) == (17.2, False)
    assert cache.cached(accuracy, lambda: 0.3) == (0.3, False)
    assert caplog.text.count("checksum does not match its key and contents") == 2
    # a forged entry, sealed the way version 3 did (SHA-256 of the pickle, no secret): never unpickled
    planted = cache.make_key("planted")

    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("a forged pickle was loaded",))

    blob = pickle.dumps(Boom())
    fresh_cache[planted] = hashlib.sha256(blob).digest() + blob
    assert cache.cached(planted, lambda: "recomputed") == ("recomputed", False)
    secret = Path(fresh_cache.directory).parent / cache.SECRET_FILE
    assert len(secret.read_bytes()) == 32 and secret.stat().st_mode & 0o777 == 0o600


def test_a_cache_directory_owned_by_another_user_is_not_used(tmp_path, monkeypatch, caplog):
    import os

    if os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root (CI runs as root)")
    foreign = tmp_path / "shared-cache"
    foreign.mkdir()
    os.chown(foreign, 12345, 12345)
    monkeypatch.setenv("PRUNEVIZ_CACHE_DIR", str(foreign))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    private = tmp_path / "tmp" / f"pruneviz-cache-{os.geteuid()}"
    assert cache.cache_dir() == private and private.stat().st_mode & 0o777 == 0o700
    assert f"The cache directory {foreign} belongs to another user" in caplog.text
    # a private folder that someone else made first is refused, in one sentence
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp2"))
    (tmp_path / "tmp2" / f"pruneviz-cache-{os.geteuid()}").mkdir(parents=True)
    os.chown(tmp_path / "tmp2" / f"pruneviz-cache-{os.geteuid()}", 12345, 12345)
    with pytest.raises(SettingError, match="belongs to this user, so neither can be trusted; set PRUNEVIZ_CACHE_DIR"):
        cache.cache_dir()


@pytest.mark.parametrize("failure", ["sqlite", "enospc"])
def test_a_full_disk_keeps_the_result_and_says_it_was_not_stored(fresh_cache, monkeypatch, caplog, failure):
    """Third hostile pass: 'database or disk is full' was a traceback, and the result computed before it was lost."""
    import errno as errnos
    import sqlite3

    import diskcache

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full") if failure == "sqlite" else OSError(errnos.ENOSPC, "No space left")

    monkeypatch.setattr(diskcache.Cache, "set", full)
    calls = []
    value, hit = cache.cached_call(lambda x: calls.append(x) or x * 2, (21,))
    assert (value, hit) == (42, False) and calls == [21]
    assert "has no room" in caplog.text and "results are computed but not kept" in caplog.text
    monkeypatch.setattr(diskcache.Cache, "get", full)
    assert cache.cached_call(lambda x: calls.append(x) or x * 2, (21,)) == (42, False), "a read on a full disk is a miss"
