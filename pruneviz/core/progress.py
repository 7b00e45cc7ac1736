"""The progress callback every long computation takes."""

from __future__ import annotations

from typing import Callable

# progress(done, total) in a computation's own units of work; it may raise errors.Cancelled to stop the work
Progress = Callable[[int, int], None]
