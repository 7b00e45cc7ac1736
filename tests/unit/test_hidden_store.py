"""Tiered hidden-state store: LRU eviction cpu -> disk -> dropped, promotion, exact usage, damaged files, threads."""

from __future__ import annotations

import hashlib
import tempfile
import threading

import pytest
import torch
from helpers import files_in

from pruneviz.core.errors import SettingError
from pruneviz.engine.hidden_store import HiddenStateStore, format_usage

KIB = 1024
# a float32 tensor of 256 values is 1 KiB; its safetensors file adds a small JSON header (< 176 bytes)
FILE_MAX = KIB + 176


def kib_tensor(value: float) -> torch.Tensor:
    """A 1 KiB float32 tensor ``[256]`` whose values identify it."""
    return torch.arange(256, dtype=torch.float32) + value * 1000


def file_of(key: str) -> str:
    return f"{hashlib.sha256(key.encode()).hexdigest()}.safetensors"


def test_lru_eviction_moves_cpu_to_disk_then_drops(tmp_path):
    store = HiddenStateStore(cpu_bytes=2 * KIB, disk_bytes=2 * FILE_MAX, directory=tmp_path)
    for i, key in enumerate("abcde"):
        store.put(key, kib_tensor(i))
    # newest two in memory, the two before on disk, the oldest dropped
    assert "a" not in store and all(key in store for key in "bcde")
    files = files_in(tmp_path)
    assert set(files) == {file_of("b"), file_of("c")}
    assert all(KIB < size <= FILE_MAX for size in files.values())
    assert store.usage() == {"gpu": 0, "cpu": 2 * KIB, "disk": sum(files.values()), "entries": 4}
    assert store.get("a") is None

    # a hit refreshes recency: "b" is no longer the oldest, so the next eviction from disk takes "c"
    assert torch.equal(store.get("b"), kib_tensor(1))  # promoted to cpu, pushing "d" to disk
    assert set(files_in(tmp_path)) == {file_of("c"), file_of("d")}
    store.put("f", kib_tensor(5))  # pushes "e" to disk, which drops "c" (least recently used there)
    assert set(files_in(tmp_path)) == {file_of("d"), file_of("e")}
    assert "c" not in store
    for key in "bdef":
        assert torch.equal(store.get(key), kib_tensor("abcdef".index(key))), key


def test_disk_round_trip_is_bit_exact(tmp_path):
    special = torch.tensor([float("nan"), -0.0, float("inf"), -float("inf"), 1e-45, 3.4e38])
    tensors = {
        "float32 specials": special,
        "bfloat16": torch.randn(3, 5, 7).to(torch.bfloat16),
        "float16 transposed view": torch.randn(6, 4, dtype=torch.float16).t(),
        "int64": torch.randint(-(2**62), 2**62, (4, 3)),
        "bool": torch.rand(9) > 0.5,
        "scalar": torch.tensor(2.5, dtype=torch.float64),
    }
    store = HiddenStateStore(cpu_bytes=0, disk_bytes=2**20, directory=tmp_path)
    for key, tensor in tensors.items():
        store.put(key, tensor)
    assert store.usage()["cpu"] == 0 and len(files_in(tmp_path)) == len(tensors)
    for key, tensor in tensors.items():
        back = store.get(key)
        assert back.dtype == tensor.dtype and back.shape == tensor.shape, key
        if tensor.is_floating_point():
            # compare bit patterns so NaN payloads and -0.0 count
            bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]
            assert torch.equal(back.view(bits), tensor.contiguous().view(bits)), key
        else:
            assert torch.equal(back, tensor), key


def test_hit_on_disk_promotes_to_cpu(tmp_path):
    store = HiddenStateStore(cpu_bytes=KIB, disk_bytes=4 * FILE_MAX, directory=tmp_path)
    store.put("old", kib_tensor(1))
    store.put("new", kib_tensor(2))
    assert set(files_in(tmp_path)) == {file_of("old")}
    assert torch.equal(store.get("old"), kib_tensor(1))
    assert set(files_in(tmp_path)) == {file_of("new")}  # the two swapped places
    assert store.usage() == {"gpu": 0, "cpu": KIB, "disk": files_in(tmp_path)[file_of("new")], "entries": 2}
    # without room in memory a disk hit stays on disk
    disk_only = HiddenStateStore(cpu_bytes=0, disk_bytes=FILE_MAX, directory=tmp_path / "second")
    disk_only.put("x", kib_tensor(3))
    assert torch.equal(disk_only.get("x"), kib_tensor(3))
    assert disk_only.usage()["cpu"] == 0 and file_of("x") in files_in(tmp_path / "second")


def test_usage_is_exact_and_replacing_a_key_does_not_double_count(tmp_path):
    store = HiddenStateStore(cpu_bytes=9000, disk_bytes=100_000, directory=tmp_path)
    shapes = {"a": ((10, 30), torch.float32), "b": ((7, 11), torch.float16), "c": ((1000,), torch.int64)}
    for key, (shape, dtype) in shapes.items():
        store.put(key, torch.zeros(shape, dtype=dtype))
    # a: 1200 B, b: 154 B in memory; c: 8000 B does not fit next to them, so a (the oldest) goes to disk
    assert store.usage()["cpu"] == 154 + 8000
    assert store.usage()["disk"] == sum(files_in(tmp_path).values()) == files_in(tmp_path)[file_of("a")]
    store.put("b", torch.zeros(3, dtype=torch.float32))  # replaces the 154-byte value
    assert store.usage()["cpu"] == 12 + 8000 and store.usage()["entries"] == 3
    # a slice of a large tensor is stored as its own 40 bytes, not the storage behind it
    store.put("slice", torch.zeros(10_000)[:10])
    assert store.usage()["cpu"] == 12 + 8000 + 40
    store.clear()
    assert store.usage() == {"gpu": 0, "cpu": 0, "disk": 0, "entries": 0}
    assert files_in(tmp_path) == {}


def test_oversize_tensor_is_not_stored_and_removes_the_stale_value(tmp_path):
    store = HiddenStateStore(cpu_bytes=KIB, disk_bytes=2 * KIB, directory=tmp_path)
    store.put("k", kib_tensor(0))
    store.put("k", torch.zeros(1024))  # 4 KiB: bigger than every budget
    assert "k" not in store and store.get("k") is None
    assert store.usage() == {"gpu": 0, "cpu": 0, "disk": 0, "entries": 0}
    # too big for memory but not for disk: goes straight to disk
    store.put("medium", torch.zeros(300))
    assert store.usage()["cpu"] == 0 and set(files_in(tmp_path)) == {file_of("medium")}
    # fits 2 KiB of tensor data but not its file header: not stored either
    store.put("edge", torch.zeros(512))
    assert "edge" not in store and set(files_in(tmp_path)) == {file_of("medium")}


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing", "another key's file"])
def test_damaged_disk_file_is_a_miss_and_forgotten(tmp_path, damage):
    store = HiddenStateStore(cpu_bytes=0, disk_bytes=10 * FILE_MAX, directory=tmp_path)
    store.put("victim", kib_tensor(1))
    store.put("other", kib_tensor(2))
    path = tmp_path / file_of("victim")
    if damage == "garbage":
        path.write_bytes(b"\xff" * path.stat().st_size)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "missing":
        path.unlink()
    else:  # same size and format, but written for "other" (e.g. a stale file from another store)
        path.write_bytes((tmp_path / file_of("other")).read_bytes())
    assert store.get("victim") is None
    assert "victim" not in store
    assert not path.exists()
    assert store.usage() == {"gpu": 0, "cpu": 0, "disk": files_in(tmp_path)[file_of("other")], "entries": 1}
    assert torch.equal(store.get("other"), kib_tensor(2))


def test_concurrent_put_and_get_stay_within_budgets_and_correct(tmp_path):
    budgets = {"gpu": 0, "cpu": 3 * KIB, "disk": 5 * FILE_MAX}
    store = HiddenStateStore(cpu_bytes=budgets["cpu"], disk_bytes=budgets["disk"], directory=tmp_path)
    keys = [f"plan=3.attn/batch={i}" for i in range(16)]
    barrier = threading.Barrier(8)
    problems: list[str] = []

    def work(thread: int) -> None:
        generator = torch.Generator().manual_seed(thread)
        barrier.wait()
        for step in range(60):
            i = int(torch.randint(len(keys), (1,), generator=generator))
            if (step + thread) % 3 == 0:
                store.put(keys[i], kib_tensor(i))
            else:
                value = store.get(keys[i])
                if value is not None and not torch.equal(value, kib_tensor(i)):
                    problems.append(f"thread {thread}: wrong value for {keys[i]}")
            usage = store.usage()
            over = [tier for tier, budget in budgets.items() if usage[tier] > budget]
            if over:
                problems.append(f"thread {thread}: over budget in {over}: {usage}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
    usage = store.usage()
    files = files_in(tmp_path)
    assert usage["disk"] == sum(files.values()) and usage["cpu"] == KIB * (usage["entries"] - len(files))
    assert usage["entries"] == 8  # 3 in memory + 5 on disk: 16 keys were put, the budgets stay full
    for i, key in enumerate(keys):
        value = store.get(key)
        assert value is None or torch.equal(value, kib_tensor(i))


def test_clear_removes_the_default_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    store = HiddenStateStore(cpu_bytes=KIB, disk_bytes=4 * FILE_MAX)
    store.put("a", kib_tensor(0))
    assert list(tmp_path.iterdir()) == []  # no directory until something goes to disk
    store.put("b", kib_tensor(1))
    (directory,) = tmp_path.iterdir()
    assert directory.name.startswith("pruneviz-hidden-")
    assert directory.stat().st_mode & 0o777 == 0o700
    assert set(files_in(directory)) == {file_of("a")}
    store.clear()
    assert list(tmp_path.iterdir()) == [] and "b" not in store
    # the store stays usable: a fresh directory is made on the next disk write
    store.put("c", kib_tensor(2))
    store.put("d", kib_tensor(3))
    (again,) = tmp_path.iterdir()
    assert set(files_in(again)) == {file_of("c")} and torch.equal(store.get("c"), kib_tensor(2))
    store.clear()


def test_given_directory_is_kept_by_clear(tmp_path):
    directory = tmp_path / "nested" / "hidden"
    (tmp_path / "keep.txt").write_text("not ours")
    store = HiddenStateStore(cpu_bytes=0, disk_bytes=4 * FILE_MAX, directory=directory)
    store.put("a", kib_tensor(0))
    assert directory.stat().st_mode & 0o777 == 0o700
    store.clear()
    assert directory.is_dir() and files_in(directory) == {}
    assert (tmp_path / "keep.txt").read_text() == "not ours"


def test_gpu_budget_is_skipped_for_cpu_tensors(tmp_path):
    store = HiddenStateStore(gpu_bytes=10 * KIB, cpu_bytes=KIB, disk_bytes=2 * FILE_MAX, directory=tmp_path)
    store.put("a", kib_tensor(0))
    store.put("b", kib_tensor(1))
    assert store.usage()["gpu"] == 0 and store.usage()["cpu"] == KIB
    assert set(files_in(tmp_path)) == {file_of("a")}
    back = store.get("a", device="cpu")
    assert back.device.type == "cpu" and torch.equal(back, kib_tensor(0))
    assert store.usage()["gpu"] == 0 and set(files_in(tmp_path)) == {file_of("b")}


def test_stored_value_is_a_detached_copy():
    store = HiddenStateStore(cpu_bytes=KIB)
    source = kib_tensor(1).requires_grad_()
    store.put("k", source)
    with torch.no_grad():
        source.mul_(0)
    back = store.get("k")
    assert not back.requires_grad and torch.equal(back, kib_tensor(1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_tier_on_cuda(tmp_path):
    store = HiddenStateStore(gpu_bytes=KIB, cpu_bytes=KIB, disk_bytes=2 * FILE_MAX, directory=tmp_path)
    store.put("a", kib_tensor(0).cuda())
    store.put("b", kib_tensor(1).cuda())  # pushes "a" to cpu
    assert store.usage() == {"gpu": KIB, "cpu": KIB, "disk": 0, "entries": 2}
    assert store.get("a").device.type == "cpu"
    back = store.get("a", device="cuda")  # promoted back to the gpu tier; "b" moves to cpu
    assert back.is_cuda and torch.equal(back.cpu(), kib_tensor(0))
    assert store.get("b").device.type == "cpu"
    store.put("c", kib_tensor(2))  # a cpu tensor skips the gpu tier and pushes "b" to disk
    assert set(files_in(tmp_path)) == {file_of("b")}
    assert torch.equal(store.get("b", device="cuda").cpu(), kib_tensor(1))


@pytest.mark.parametrize("budget", [-1, 1.5, True, "1"])
def test_bad_budget_is_a_setting_error(budget):
    with pytest.raises(SettingError, match="cpu_bytes must be a whole number of bytes"):
        HiddenStateStore(cpu_bytes=budget)


def test_format_usage():
    assert format_usage({"gpu": 0, "cpu": 12_897_484, "disk": 0, "entries": 41}) == "CPU 12.3 MiB, disk 0 B, 41 entries"
    assert format_usage({"gpu": 3 * 2**30, "cpu": 1023, "disk": 1536, "entries": 1}) == (
        "GPU 3.0 GiB, CPU 1,023 B, disk 1.5 KiB, 1 entry"
    )


def test_a_pinned_entry_outlives_newer_unpinned_ones_until_only_pinned_are_left():
    one = torch.zeros(4, 4)  # 64 bytes
    store = HiddenStateStore(cpu_bytes=3 * 64)
    store.put("reference", one, pin=True)
    for n in range(5):
        store.put(f"plan-{n}", one + n)
    assert "reference" in store and store.usage()["entries"] == 3  # the oldest, but pinned
    assert "plan-4" in store and "plan-0" not in store
    store.put("reference-2", one, pin=True)
    store.put("reference-3", one, pin=True)
    store.put("reference-4", one, pin=True)  # only pinned entries left: the least recently used of them goes
    assert "reference" not in store and store.usage()["entries"] == 3
