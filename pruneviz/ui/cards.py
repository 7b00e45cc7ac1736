"""``st.metric`` cards: numbers short enough for a card, which cuts a long value off with an ellipsis, and
the colour and arrow of a change.

A card in a row of four in the wide layout holds about ten characters of its value (the browser test
checks that none is cut); the exact count goes into the card's tooltip.
"""

from __future__ import annotations

SUFFIXES = ("", "K", "M", "B", "T")


def short_count(count: float, digits: int = 3) -> str:
    """``count`` to ``digits`` significant digits with a thousands suffix, e.g. ``"885K"``, ``"28.3M"``, ``"70.55B"``.

    Counts below a thousand have no suffix (``"576"``). The suffix is chosen after rounding, so
    999,999 is ``"1M"``, not ``"1e+03K"``.
    """
    power = 0
    while abs(float(f"{count:.{digits}g}")) >= 1000 and power < len(SUFFIXES) - 1:
        count /= 1000
        power += 1
    return f"{float(f'{count:.{digits}g}'):g}{SUFFIXES[power]}"


def delta_style(change: float, lower_is_better: bool, beyond_noise: bool = True) -> dict:
    """Streamlit's delta colour and arrow: red for a change for the worse, grey and no arrow for none, grey (the
    arrow kept) for a change within noise, which is not called better or worse.

    A text delta such as "+0.0 pp" would otherwise count as an improvement, with an up arrow.
    """
    if change == 0:
        return {"delta_color": "off", "delta_arrow": "off"}
    if not beyond_noise:
        return {"delta_color": "off"}
    return {"delta_color": "inverse" if lower_is_better else "normal"}
