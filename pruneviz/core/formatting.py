"""Human-readable quantities and quotations shared by the app, the CLI, reports and error messages."""

from __future__ import annotations

SHOWN_CHARACTERS = 60  # an error message quotes at most this much of what was typed


def shown(text: str) -> str:
    """``text`` as an error message quotes it: whole when short, else its start and its length."""
    return text if len(text) <= SHOWN_CHARACTERS else f"{text[:SHOWN_CHARACTERS]}... ({len(text):,} characters)"


def format_bytes(count: float) -> str:
    """``count`` bytes in binary units, e.g. ``"1.5 GiB"`` (``"512 B"`` below a kibibyte; 1 KiB = 1024 bytes)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = 0
    while abs(count) >= 1024 and power < len(units) - 1:
        count /= 1024
        power += 1
    return f"{count:,.0f} B" if power == 0 else f"{count:,.1f} {units[power]}"


def format_number(x: float, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals, or 3 significant digits from a million on (a perplexity of 1e45, every
    block pruned, would otherwise print 46 digits)."""
    return f"{x:.{digits}f}" if abs(x) < 1e6 else f"{x:.3g}"


def is_whole_number(text: str) -> bool:
    """Whether ``text`` is a non-negative whole number written in ASCII digits (``str.isdigit`` alone also accepts
    superscripts such as ``"²"``, which ``int`` then refuses with a traceback)."""
    return text.isascii() and text.isdigit()
