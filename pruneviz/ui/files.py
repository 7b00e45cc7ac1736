"""Where the app writes (fresh directories under the cache dir, never a typed path) and how it hands files out."""

from __future__ import annotations

import io
import re
import secrets
import zipfile
from datetime import datetime
from pathlib import Path

from ..core.cache import cache_dir


def _slug(text: str) -> str:
    """``text`` reduced to a safe file-name part (letters, digits, '.', '-', '_'), at most 60 characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:60] or "none"


def output_directory(kind: str, model_name: str, *parts: str) -> Path:
    """A new, unique directory path ``<cache dir>/<kind>/<model>-<parts>-<time>-<random>`` (not yet created).

    The app never writes to a path typed by a user: in a shared deployment that would let anyone
    overwrite files on the server. Every part becomes one safe file-name component.

    Args:
        kind: the subdirectory, e.g. ``"exports"`` or ``"recoveries"``.
        model_name: the model's name (a directory or hub id contributes only its last component).
        parts: words that make the name readable, e.g. the plan and the recovery label.
    """
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = "-".join([_slug(Path(model_name).name), *(_slug(part) for part in parts), stamp, secrets.token_hex(3)])
    return cache_dir() / kind / name


def zip_directory(directory: Path) -> bytes:
    """The files under ``directory`` as an uncompressed zip (weights barely compress; storing is fast)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, Path(directory.name) / path.relative_to(directory))
    return buffer.getvalue()


def directory_bytes(directory: Path) -> int:
    """Total size of the files under ``directory``."""
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
