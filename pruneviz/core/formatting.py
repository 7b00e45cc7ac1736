"""Human-readable quantities shared by the app, the CLI and reports."""

from __future__ import annotations


def format_bytes(count: float) -> str:
    """``count`` bytes in binary units, e.g. ``"1.5 GiB"`` (``"512 B"`` below a kibibyte; 1 KiB = 1024 bytes)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = 0
    while abs(count) >= 1024 and power < len(units) - 1:
        count /= 1024
        power += 1
    return f"{count:,.0f} B" if power == 0 else f"{count:,.1f} {units[power]}"
