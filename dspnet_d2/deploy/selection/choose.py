"""Budgets, the Pareto front and the choice: the most accurate DN within every budget (without accuracies,
the largest by FLOPs), with the reason in words."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import InvalidInputError

__all__ = ["Budget", "Choice", "pareto_front", "choose", "SIZE"]

SIZE = "flops"  # the ranking without accuracies: the larger DN within budget


@dataclass(frozen=True)
class Budget:
    """Upper limits a DN must meet; None: no limit."""

    latency_ms: float | None = None  # median latency
    flops_g: float | None = None  # GFLOPs of one image
    params_m: float | None = None  # million parameters
    memory_mb: float | None = None  # peak memory, MiB

    def limits(self) -> list[tuple[str, float, str]]:
        """(row key, limit in the row's unit, the limit in words) of each budget given."""
        spec = (("latency_ms", self.latency_ms, 1, "latency", "ms"), ("flops", self.flops_g, 1e9, "FLOPs", "G"),
                ("params", self.params_m, 1e6, "params", "M"), ("memory_mb", self.memory_mb, 1, "memory", "MB"))
        for key, value, _, label, _ in spec:
            if value is not None and not value > 0:
                raise InvalidInputError(f"a budget is a positive number, got {label} {value}")
        return [(key, value * scale, f"{label} <= {value:g} {unit}") for key, value, scale, label, unit in spec
                if value is not None]

    def describe(self) -> str:
        return ", ".join(words for _, _, words in self.limits()) or "no budget"


_BEST = {"latency_ms": "fastest", "flops": "smallest", "params": "smallest", "memory_mb": "leanest"}


@dataclass(frozen=True)
class Choice:
    dn: str
    reason: str
    within_budget: tuple[str, ...]


def pareto_front(rows: list[dict], x_key: str, y_key: str) -> set[str]:
    """DNs that no other DN beats: none has at most their ``x`` (lower is better) and at least their ``y``
    (higher is better) with one of the two strictly better. Rows without both figures are left out."""
    points = [r for r in rows if r.get(x_key) is not None and r.get(y_key) is not None]
    return {r["dn"] for r in points
            if not any(o[x_key] <= r[x_key] and o[y_key] >= r[y_key] and (o[x_key] < r[x_key] or o[y_key] > r[y_key])
                       for o in points)}


def _within(rows: list[dict], limits) -> list[dict]:
    return [r for r in rows if all(r[key] <= limit for key, limit, _ in limits)]


def choose(rows: list[dict], budget: Budget, score: str = SIZE, score_label: str = "FLOPs",
           settings_text: str = "", unscored: dict[str, str] | None = None) -> Choice:
    """The DN of ``rows`` with the highest ``score`` among those within ``budget`` (ties: the faster).

    A budget that no DN meets is an InvalidInputError naming the best DN on that figure; so is a set of
    budgets that each DN meets only in part, and DNs within budget none of which has ``score`` (``unscored``:
    DN -> why it has none).
    """
    limits = budget.limits()
    context = f" ({settings_text})" if settings_text else ""
    for key, limit, words in limits:
        if not _within(rows, [(key, limit, words)]):
            r = min(rows, key=lambda row: row[key])
            raise InvalidInputError(f"no DN meets {words}{context}: the {_BEST[key]} is {r['dn']} ({_value(r, key)})")
    within = _within(rows, limits)
    if not within:
        closest = "; ".join(f"the {_BEST[key]} is {r['dn']} ({_value(r, key)})"
                            for key, _, _ in limits for r in [min(rows, key=lambda row: row[key])])
        raise InvalidInputError(f"no DN meets {budget.describe()} together{context} ({closest})")
    ranked = [r for r in within if r.get(score) is not None]
    if not ranked:
        why = unscored or {}
        listed = ", ".join(f"{r['dn']}: {why[r['dn']]}" if r["dn"] in why else r["dn"] for r in within)
        raise InvalidInputError(f"none of the {len(within)} DNs within {budget.describe()} has {score_label} "
                                f"({listed})")
    chosen = max(ranked, key=lambda r: (r[score], -r["latency_ms"]))
    return Choice(chosen["dn"], _reason(chosen, rows, within, limits, score, score_label, budget),
                  tuple(r["dn"] for r in within))


def _reason(chosen, rows, within, limits, score, score_label, budget) -> str:
    value = f"{chosen[score] / 1e9:.3f} G" if score == SIZE else f"{chosen[score]:.2f}"
    among = (f"of the {len(within)} of {len(rows)} DNs within {budget.describe()}" if limits
             else f"of all {len(rows)} DNs (no budget given)")
    text = (f"{chosen['dn']}: the highest {score_label} ({value}) {among}; {chosen['latency_ms']:.1f} ms, "
            f"{chosen['flops'] / 1e9:.3f} GFLOPs, "
            f"{chosen['params'] / 1e6:.2f} M params, {chosen['memory_mb']:.1f} MB")
    better = sorted((r for r in rows if r.get(score) is not None and r[score] > chosen[score]), key=lambda r: -r[score])
    if better:
        over = [f"{r['dn']} ({', '.join(_value(r, key) for key, limit, _ in limits if r[key] > limit)})"
                for r in better[:3]]
        more = f" and {len(better) - 3} more" if len(better) > 3 else ""
        text += f". Higher {score_label} but over budget: " + "; ".join(over) + more
    return text


def _value(row: dict, key: str) -> str:
    return {"latency_ms": f"latency {row['latency_ms']:.1f} ms", "flops": f"FLOPs {row['flops'] / 1e9:.3f} G",
            "params": f"params {row['params'] / 1e6:.2f} M", "memory_mb": f"memory {row['memory_mb']:.1f} MB"}[key]
