"""A bounded, tiered, least-recently-used store of block-boundary hidden states.

Incremental evaluation keeps the residual stream entering block ``k`` (``resid_pre[k]``,
``[B, T, d]`` per batch) of the unpruned model or of recent plans, so that a plan whose first change is
at block ``k`` only recomputes blocks ``k..L-1``. Those tensors are large and the app serves several
browser sessions at once, so they live in a store with a byte budget per tier: accelerator memory,
then CPU memory, then disk (one safetensors file per entry). The store only keeps tensors under
string keys; which key names which state is the engine's business.

Example:
    >>> store = HiddenStateStore(cpu_bytes=2**20)
    >>> store.put("plan=;batch=0;block=3", torch.zeros(2, 8, 16))
    >>> store.get("plan=;batch=0;block=3").shape
    torch.Size([2, 8, 16])
    >>> format_usage(store.usage())
    'CPU 1.0 KiB, disk 0 B, 1 entry'
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..core.errors import SettingError
from ..core.formatting import format_bytes

log = logging.getLogger(__name__)

TIERS = ("gpu", "cpu", "disk")
_TENSOR_NAME = "hidden"  # the single tensor inside each entry's safetensors file
_KEY_FIELD = "key"  # safetensors metadata field holding the entry's key, checked on every read


@dataclass
class _Entry:
    """Where one stored tensor lives and how many bytes it is charged to its tier.

    ``nbytes`` is ``numel * element_size`` on the gpu and cpu tiers and the file size on disk.
    """

    tier: str
    nbytes: int
    dtype: torch.dtype
    shape: torch.Size
    tensor: torch.Tensor | None = None
    path: Path | None = None


def _tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _check_budget(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SettingError(
            f"{name} must be a whole number of bytes >= 0, got {value!r}; pass 0 to switch that tier off."
        )
    return value


class HiddenStateStore:
    """Least-recently-used store of tensors in tiers: accelerator memory -> CPU memory -> disk (safetensors files).

    A new tensor goes into the fastest tier with a budget > 0 that it fits on its own: the ``gpu`` tier
    only for tensors already on CUDA, then ``cpu``, then ``disk``. When a tier holds more bytes than its
    budget, its least recently used entries move down a tier (gpu -> cpu -> disk, skipping tiers they do
    not fit); past the last tier they are dropped. A hit on a lower tier promotes the entry to the
    fastest tier it fits (``gpu`` only when ``get`` asks for a CUDA device). Recency is one order over
    all entries: ``put`` and every hit make an entry the most recently used.

    Stored tensors are detached, contiguous copies that the store owns, so later in-place changes to the
    tensor passed to :meth:`put` do not reach the store. :meth:`get` returns the stored tensor itself
    when no device move is needed (so a hit costs no extra memory): treat it as read-only.

    Every method is thread-safe (one lock; disk reads and writes happen under it, so one slow disk read
    delays other threads rather than racing them).

    Args:
        gpu_bytes: budget of the accelerator tier in bytes (0 = off).
        cpu_bytes: budget of the CPU-memory tier in bytes (0 = off).
        disk_bytes: budget of the disk tier in bytes, counted as file sizes (0 = off).
        directory: where disk entries are written (created 0700 on first use, only this store's files
            are deleted from it). Default: a fresh private ``tempfile.mkdtemp()`` directory, created on
            first use and removed by :meth:`clear` or when the store is garbage collected.

    Raises:
        SettingError: a budget is not a whole number of bytes >= 0.
    """

    def __init__(
        self, gpu_bytes: int = 0, cpu_bytes: int = 512 * 2**20, disk_bytes: int = 0, directory: Path | None = None
    ):
        self._budget = {
            "gpu": _check_budget("gpu_bytes", gpu_bytes),
            "cpu": _check_budget("cpu_bytes", cpu_bytes),
            "disk": _check_budget("disk_bytes", disk_bytes),
        }
        self._directory = Path(directory) if directory is not None else None
        self._cleanup: weakref.finalize | None = None
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._pinned: set[str] = set()  # evicted only when nothing else is left in their tier
        self._used = dict.fromkeys(TIERS, 0)
        self._lock = threading.Lock()

    def get(self, key: str, device: torch.device | str | None = None) -> torch.Tensor | None:
        """The tensor stored under ``key`` (same dtype, shape and values as put), or ``None`` on a miss.

        A hit makes the entry the most recently used and may promote it (disk -> cpu, or to the gpu tier
        when ``device`` is CUDA). A disk entry whose file is missing or unreadable is a miss and is
        forgotten.

        Args:
            key: the key it was put under.
            device: where to return the tensor; ``None`` = wherever it is stored (CPU for disk entries).
        """
        target = torch.device(device) if device is not None else None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            tensor = entry.tensor if entry.tier != "disk" else self._read(key, entry)
            if tensor is None:
                return None
            self._entries.move_to_end(key)
            tensor = self._promote(key, entry, tensor, target)
        return tensor if target is None else tensor.to(target)

    def put(self, key: str, tensor: torch.Tensor, pin: bool = False) -> None:
        """Store a detached copy of ``tensor`` under ``key`` (replacing any previous value) as the most recent entry.

        Entries that no longer fit their tier move down or are dropped, least recently used first and pinned
        ones last. A tensor larger than every budget is not stored (any previous value under ``key`` is still
        removed, since it is stale).

        Args:
            key: any string.
            tensor: any dtype and shape, e.g. a ``[B, T, d]`` block input.
            pin: keep it ahead of unpinned entries however long it goes unused (a reference that every later
                lookup may need, such as the unpruned model's states in a Shapley run).

        Raises:
            TypeError: ``key`` is not a string or ``tensor`` is not a ``torch.Tensor``.
        """
        if not isinstance(key, str):
            raise TypeError(f"Hidden-state keys must be strings, got {type(key).__name__}; build the key with str().")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"Only torch tensors can be stored, got {type(tensor).__name__}.")
        tensor = tensor.detach()
        with self._lock:
            self._forget(key)
            first = "gpu" if tensor.is_cuda else "cpu"
            entry = self._place(key, tensor, TIERS.index(first), copy=True)
            if entry is None:
                return
            self._entries[key] = entry
            self._used[entry.tier] += entry.nbytes
            if pin:
                self._pinned.add(key)
            self._enforce_budgets()

    def __contains__(self, key: str) -> bool:
        """Whether ``key`` has an entry (a disk entry whose file was damaged since still reads as a miss)."""
        with self._lock:
            return key in self._entries

    def usage(self) -> dict[str, int]:
        """Bytes held per tier (``gpu``/``cpu``: tensor bytes, ``disk``: file sizes) and the number of ``entries``."""
        with self._lock:
            return {**self._used, "entries": len(self._entries)}

    def clear(self) -> None:
        """Drop every entry, delete its files, and remove the default temporary directory."""
        with self._lock:
            for entry in self._entries.values():
                if entry.path is not None:
                    entry.path.unlink(missing_ok=True)
            self._entries.clear()
            self._pinned.clear()
            self._used = dict.fromkeys(TIERS, 0)
            if self._cleanup is not None:
                self._cleanup()  # removes the temporary directory; a later disk write makes a new one
                self._cleanup = None
                self._directory = None

    def _forget(self, key: str) -> None:
        """Remove ``key``'s entry and its file, if any."""
        entry = self._entries.pop(key, None)
        self._pinned.discard(key)
        if entry is None:
            return
        self._used[entry.tier] -= entry.nbytes
        if entry.path is not None:
            entry.path.unlink(missing_ok=True)

    def _place(self, key: str, tensor: torch.Tensor, start: int, copy: bool) -> _Entry | None:
        """A new entry for ``tensor`` in the first tier from ``TIERS[start]`` on that it fits, or ``None``.

        Does not touch ``self._entries`` or ``self._used``; the caller books the entry.
        """
        nbytes = _tensor_bytes(tensor)
        for tier in TIERS[start:]:
            budget = self._budget[tier]
            if budget == 0 or nbytes > budget or (tier == "gpu" and not tensor.is_cuda):
                continue
            if tier == "disk":
                return self._write(key, tensor)
            device = tensor.device if tier == "gpu" else torch.device("cpu")
            if copy:
                # a fresh contiguous buffer of exactly nbytes: not a view pinning a larger storage
                stored = torch.empty(tensor.shape, dtype=tensor.dtype, device=device).copy_(tensor)
            else:
                stored = tensor.to(device)
            return _Entry(tier, nbytes, tensor.dtype, tensor.shape, tensor=stored)
        return None

    def _enforce_budgets(self) -> None:
        """Move least recently used entries down (or out) until every tier is within its budget."""
        for index, tier in enumerate(TIERS):
            while self._used[tier] > self._budget[tier]:
                in_tier = [k for k, e in self._entries.items() if e.tier == tier]
                key = next((k for k in in_tier if k not in self._pinned), in_tier[0])
                entry = self._entries[key]
                if tier == "disk":
                    self._forget(key)
                    continue
                self._used[tier] -= entry.nbytes
                moved = self._place(key, entry.tensor, index + 1, copy=False)
                if moved is None:
                    del self._entries[key]
                    self._pinned.discard(key)
                else:
                    self._entries[key] = moved  # keeps its place in the recency order
                    self._used[moved.tier] += moved.nbytes

    def _promote(self, key: str, entry: _Entry, tensor: torch.Tensor, target: torch.device | None) -> torch.Tensor:
        """Move a hit up to the fastest tier it fits; return the tensor as now stored."""
        nbytes = _tensor_bytes(tensor)
        fits = {tier: 0 < self._budget[tier] and nbytes <= self._budget[tier] for tier in TIERS}
        if target is not None and target.type == "cuda" and entry.tier != "gpu" and fits["gpu"]:
            tier, stored = "gpu", tensor.to(target)
        elif entry.tier == "disk" and fits["cpu"]:
            tier, stored = "cpu", tensor
        else:
            return tensor
        self._used[entry.tier] -= entry.nbytes
        if entry.path is not None:
            entry.path.unlink(missing_ok=True)
        self._entries[key] = _Entry(tier, nbytes, entry.dtype, entry.shape, tensor=stored)
        self._used[tier] += nbytes
        self._enforce_budgets()
        return stored

    def _disk_directory(self) -> Path:
        """The directory for disk entries, created 0700 on first use."""
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="pruneviz-hidden-"))  # mkdtemp creates it 0700
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._directory), True)
        elif not self._directory.is_dir():
            self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self._directory

    def _write(self, key: str, tensor: torch.Tensor) -> _Entry | None:
        """Write ``tensor`` to its own safetensors file; ``None`` if that fails or the file exceeds the disk budget."""
        path = None
        try:
            # file names are hashes because keys are arbitrary strings (slashes, any length)
            path = self._disk_directory() / f"{hashlib.sha256(key.encode()).hexdigest()}.safetensors"
            partial = path.with_suffix(".partial")
            data = tensor.to(device="cpu").contiguous()  # safetensors writes contiguous tensors only
            save_file({_TENSOR_NAME: data}, str(partial), metadata={_KEY_FIELD: key})
            os.replace(partial, path)  # a reader never sees a half-written file under the final name
            size = path.stat().st_size
        except OSError as error:
            # the store only saves recomputation: a full or unwritable disk drops the entry instead of failing
            log.warning("Could not write hidden state %r to disk (%s); dropping it.", key[:80], error)
            if path is not None:
                path.with_suffix(".partial").unlink(missing_ok=True)
                path.unlink(missing_ok=True)
            return None
        if size > self._budget["disk"]:
            path.unlink()
            return None
        return _Entry("disk", size, tensor.dtype, tensor.shape, path=path)

    def _read(self, key: str, entry: _Entry) -> torch.Tensor | None:
        """The tensor in ``entry``'s file, or ``None`` (and the entry forgotten) if it is missing or unreadable."""
        try:
            with safe_open(str(entry.path), framework="pt", device="cpu") as file:
                if (file.metadata() or {}).get(_KEY_FIELD) != key:
                    raise ValueError("file belongs to another key")
                tensor = file.get_tensor(_TENSOR_NAME)
            if tensor.dtype != entry.dtype or tensor.shape != entry.shape:
                raise ValueError(f"file holds {tensor.dtype} {tuple(tensor.shape)}")
        except Exception as error:  # safetensors raises its own error types for damaged files
            log.warning("Hidden state %r on disk is unreadable (%s); forgetting it.", key[:80], error)
            self._forget(key)
            return None
        return tensor


def format_usage(usage: Mapping[str, int]) -> str:
    """One-line summary of :meth:`HiddenStateStore.usage`, e.g. ``"CPU 12.3 MiB, disk 0 B, 41 entries"``.

    The GPU tier is named only when it holds something. Sizes use binary units (1 KiB = 1024 bytes).
    """
    parts = [f"GPU {format_bytes(usage['gpu'])}"] if usage.get("gpu") else []
    parts += [f"CPU {format_bytes(usage['cpu'])}", f"disk {format_bytes(usage['disk'])}"]
    entries = usage["entries"]
    parts.append(f"{entries} {'entry' if entries == 1 else 'entries'}")
    return ", ".join(parts)
