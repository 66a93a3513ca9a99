"""What a scenario produces: measured figures (with targets) and the raw numbers behind them.

A scenario's prose notes are not stored here by the scenario: they are rendered from
``raw`` by the scenario module's ``notes(raw, machine)`` (see ``bench.registry``), so every
number in the prose comes from the results dict and `python -m bench --report-only` can
render them again from bench/results.json.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: How a target reads in BENCHMARKS.md, and back.
_OPS = {">=": "≥", "<=": "≤"}


@dataclass
class Figure:
    """One measured number, with its target when it has one (`(">=", 0.95)`)."""

    name: str
    value: float | int | None
    unit: str = ""
    target: tuple[str, float] | None = None
    note: str = ""
    digits: int = 3  # decimals shown for a float value

    @property
    def verdict(self) -> str:
        """PASS or MISS against the target; "" when there is no target."""
        if self.target is None:
            return ""
        if self.value is None:
            return "MISS"
        op, bound = self.target
        ok = self.value >= bound if op == ">=" else self.value <= bound
        return "PASS" if ok else "MISS"

    def shown(self) -> str:
        """The value as BENCHMARKS.md prints it."""
        if self.value is None:
            return "n/a"
        if isinstance(self.value, int):
            return f"{self.value:,}"
        return f"{self.value:,.{self.digits}f}"

    def target_text(self) -> str:
        """E.g. ``≥ 0.95``; "" when there is no target."""
        if self.target is None:
            return ""
        op, bound = self.target
        return f"{_OPS[op]} {bound:g}"

    def to_dict(self) -> dict[str, Any]:
        """The figure as results.json keeps it."""
        return {"name": self.name, "value": self.value, "unit": self.unit, "digits": self.digits,
                "target": self.target_text() or None, "verdict": self.verdict or None, "note": self.note}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Figure:
        """Read back what ``to_dict`` wrote (``digits`` defaults as when it was not stored)."""
        target: tuple[str, float] | None = None
        if data.get("target"):
            symbol, bound = str(data["target"]).split(" ", 1)
            op = next(k for k, v in _OPS.items() if v == symbol)
            target = (op, float(bound))
        value = data.get("value")
        digits = data.get("digits")
        return cls(name=str(data["name"]), value=value, unit=str(data.get("unit") or ""), target=target,
                   note=str(data.get("note") or ""),
                   digits=int(digits) if digits is not None else _digits_shown(value))


def _digits_shown(value: object) -> int:
    """Older results.json files did not store `digits`: 3 was the default, and is used."""
    return 3 if isinstance(value, float) else 0


@dataclass
class ScenarioResult:
    """One scenario's outcome: its figures, its raw numbers and (rendered) notes."""

    key: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # rendered from `raw` by the scenario's notes()
    raw: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, *args: Any, **kwargs: Any) -> Figure:
        """Append a figure (the arguments of :class:`Figure`) and return it."""
        figure = Figure(*args, **kwargs)
        self.figures.append(figure)
        return figure

    def to_dict(self) -> dict[str, Any]:
        """The scenario as results.json keeps it."""
        return {"title": self.title, "seconds": round(self.seconds, 1),
                "figures": [f.to_dict() for f in self.figures], "notes": self.notes, "raw": self.raw}

    @classmethod
    def from_dict(cls, key: str, data: Mapping[str, Any]) -> ScenarioResult:
        """Read back what ``to_dict`` wrote (notes are left to be rendered again)."""
        return cls(key=key, title=str(data["title"]), figures=[Figure.from_dict(f) for f in data["figures"]],
                   raw=dict(data.get("raw") or {}), seconds=float(data.get("seconds") or 0.0))
