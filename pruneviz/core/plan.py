"""Pruning plans: which units (blocks or sublayers) are switched off.

A unit is written ``"<i>"`` (whole block i), ``"<i>.attn"`` or ``"<i>.mlp"``; a plan's canonical
string is the sorted, comma-separated list of its units, with a block written once when both of
its sublayers are pruned (``"3.attn,7,12.mlp"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from .errors import PlanError, SettingError
from .formatting import shown

SUBLAYERS = ("attn", "mlp")
# ASCII digits only: "\d" also matches full-width and other scripts' digits, which int() reads silently
_UNIT_RE = re.compile(r"^([0-9]+)(?:\.(attn|mlp))?$")


@dataclass(frozen=True, order=True)
class Unit:
    """One prunable unit.

    Attributes:
        layer: 0-based block index.
        sublayer: ``"attn"``, ``"mlp"`` or ``None`` for the whole block.
    """

    layer: int
    sublayer: str | None = None

    def __str__(self) -> str:
        return str(self.layer) if self.sublayer is None else f"{self.layer}.{self.sublayer}"

    @property
    def kind(self) -> str:
        """``"attn"``, ``"mlp"`` or ``"block"`` (the CSV ``sublayer`` column)."""
        return self.sublayer or "block"

    def sublayers(self) -> tuple[tuple[int, str], ...]:
        """The ``(layer, sublayer)`` pairs this unit switches off."""
        names = SUBLAYERS if self.sublayer is None else (self.sublayer,)
        return tuple((self.layer, name) for name in names)

    @classmethod
    def parse(cls, text: str) -> "Unit":
        """Parse ``"12"``, ``"12.attn"`` or ``"12.mlp"``.

        Raises:
            PlanError: the text is not of that form.
        """
        match = _UNIT_RE.match(text.strip())
        if match is None:
            raise PlanError(
                f"'{shown(text.strip())}' is not a unit; write a block index ('12'), '12.attn' or '12.mlp'."
            )
        return cls(int(match.group(1)), match.group(2))


@dataclass(frozen=True)
class UnitSelection:
    """Which units an influence table, a ranking or a curve is about (docs/ARCHITECTURE.md, "unit selection").

    Attributes:
        name: ``block``, ``attn``, ``mlp``, ``sublayer`` (attn and mlp), ``both`` (the same units as
            ``sublayer``; the spelling of ``curve --scheme``) or ``all`` (blocks and sublayers).
        kinds: the :attr:`Unit.kind` values it holds (the influence table's ``sublayer`` column).
        label: what it is in words, for pickers and titles ("attention sublayers").
    """

    name: str
    kinds: tuple[str, ...]
    label: str

    def units(self, n_blocks: int) -> list[Unit]:
        """Its units in block order (block, attn, mlp within a block): L, 2L or (for ``all``) 3L of them."""
        return [Unit(i, None if kind == "block" else kind) for i in range(n_blocks) for kind in self.kinds]

    @property
    def measured_as(self) -> str:
        """The influence selection that measures these units: ``block`` for blocks, ``sublayer`` otherwise."""
        return "block" if self.kinds == ("block",) else "sublayer"


UNIT_SELECTIONS = {
    selection.name: selection
    for selection in (
        UnitSelection("block", ("block",), "whole blocks"),
        UnitSelection("attn", ("attn",), "attention sublayers"),
        UnitSelection("mlp", ("mlp",), "MLP sublayers"),
        UnitSelection("sublayer", SUBLAYERS, "attention and MLP sublayers"),
        UnitSelection("both", SUBLAYERS, "sublayers (attn and mlp together)"),
        UnitSelection("all", ("block", *SUBLAYERS), "blocks and sublayers"),
    )
}
# what an influence table measures (``influence --granularity``) and what a ranking orders (``curve --scheme``)
MEASURED_SELECTIONS = ("block", "sublayer", "all")
RANKED_SELECTIONS = ("block", "attn", "mlp", "both")


def unit_selection(name: str, allowed: Iterable[str] = tuple(UNIT_SELECTIONS)) -> UnitSelection:
    """The :class:`UnitSelection` called ``name``.

    Raises:
        SettingError: ``name`` is not one of ``allowed``; the message lists them.
    """
    allowed = tuple(allowed)
    if name not in allowed:
        raise SettingError(f"'{shown(str(name))}' is not a unit selection here; use one of {', '.join(allowed)}.")
    return UNIT_SELECTIONS[name]


def units_of(n_blocks: int, selection: str) -> list[Unit]:
    """All units of a model in a selection (:data:`UNIT_SELECTIONS`), in block order.

    Args:
        n_blocks: number of decoder blocks L.
        selection: ``"block"`` (L units), ``"sublayer"`` (2L units: attn and mlp), ``"attn"`` or ``"mlp"`` (L units).

    Raises:
        SettingError: unknown selection.
    """
    return unit_selection(selection).units(n_blocks)


@dataclass(frozen=True)
class PruningPlan:
    """A set of pruned sublayers, stored as ``(layer, sublayer)`` pairs (a block is both of its pairs).

    Use :meth:`parse` or :meth:`of` to build one and :meth:`validate` before running it.
    """

    pruned: frozenset[tuple[int, str]] = frozenset()

    @classmethod
    def of(cls, units: Iterable[Unit | str]) -> "PruningPlan":
        """Build a plan from units or unit strings."""
        pairs: set[tuple[int, str]] = set()
        for unit in units:
            pairs.update((unit if isinstance(unit, Unit) else Unit.parse(unit)).sublayers())
        return cls(frozenset(pairs))

    @classmethod
    def parse(cls, text: str | None, n_blocks: int | None = None) -> "PruningPlan":
        """Parse a comma-separated plan (``""``, ``None`` or ``"none"`` = nothing pruned).

        Args:
            text: e.g. ``"3.attn, 7,12.mlp"``.
            n_blocks: if given, also :meth:`validate` against a model with this many blocks.

        Raises:
            PlanError: a malformed unit, a plan of blanks only (a typo that would otherwise mean "unpruned"),
                or (with ``n_blocks``) an index out of range.
        """
        if text and not text.strip():
            raise PlanError("The plan holds only blanks; write units like '3.attn, 7', or leave it empty (or 'none') for the unpruned model.")
        text = (text or "").strip()
        items = [] if text.lower() in ("", "none") else text.split(",")
        if any(not item.strip() for item in items):
            raise PlanError(f"The plan '{shown(text)}' has an empty item between commas; write units like '3.attn, 7, 12.mlp'.")
        plan = cls.of(items)
        if n_blocks is not None:
            plan.validate(n_blocks)
        return plan

    def validate(self, n_blocks: int) -> "PruningPlan":
        """Check every index against a model with ``n_blocks`` blocks; returns ``self``.

        Raises:
            PlanError: names the first unit whose block does not exist.
        """
        for unit in self.units():
            if not 0 <= unit.layer < n_blocks:
                raise PlanError(
                    f"The plan names '{unit}' but the model has blocks 0-{n_blocks - 1}; "
                    "remove it or pick an index in range."
                )
        return self

    def units(self) -> list[Unit]:
        """Canonical units: a block whose both sublayers are pruned is one block unit."""
        layers = sorted({layer for layer, _ in self.pruned})
        out = []
        for layer in layers:
            names = [s for s in SUBLAYERS if (layer, s) in self.pruned]
            out.extend([Unit(layer)] if len(names) == 2 else [Unit(layer, s) for s in names])
        return out

    def __str__(self) -> str:
        return ",".join(str(u) for u in self.units())

    def __contains__(self, pair: tuple[int, str]) -> bool:
        return pair in self.pruned

    def __len__(self) -> int:
        return len(self.pruned)

    def __or__(self, other: "PruningPlan") -> "PruningPlan":
        return PruningPlan(self.pruned | other.pruned)

    def first_layer(self) -> int | None:
        """Index of the first block the plan touches (``None`` for the empty plan)."""
        return min((layer for layer, _ in self.pruned), default=None)

    def is_everything(self, n_blocks: int) -> bool:
        """Whether every sublayer of every block is pruned (embeddings go straight to the head)."""
        return len(self.pruned) == 2 * n_blocks
