"""``dn_selection.{md,csv,json,png}``: every DN's FLOPs, params, latency (median, quartiles), memory and
accuracies, Pareto-optimal or not, within budget or not, the chosen DN marked."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict

from .choose import SIZE, pareto_front

__all__ = ["write_selection"]

FIELDS = ("dn", "flops", "params", "resolution", "latency_ms", "latency_q1_ms", "latency_q3_ms", "memory_mb")
FLAGS = ("pareto", "within_budget", "chosen", "weights", "measured", "cached")


def write_selection(selection, output_dir: str, measured: str, memory: str) -> dict[str, str]:
    """Writes the four files of ``selection`` (a ``Selection``) into ``output_dir``; returns their paths."""
    paths = {ext: os.path.join(output_dir, f"dn_selection.{ext}") for ext in ("md", "csv", "json", "png")}
    s = selection
    with open(paths["json"], "w") as f:
        json.dump({"measured": measured, "settings": asdict(s.settings), "memory": memory, "budget": asdict(s.budget),
                   "rank_by": s.rank_by, "accuracy_columns": s.columns, "chosen": s.choice.dn if s.choice else None,
                   "reason": s.choice.reason if s.choice else None, "notes": s.notes, "rows": s.rows}, f, indent=1)
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*FIELDS, *s.columns, *FLAGS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(s.rows)
    with open(paths["md"], "w") as f:
        f.write(markdown(s, measured, memory))
    plot_selection(s, paths["png"], measured)
    return paths


def _rank_label(rank_by: str) -> str:
    return "size (FLOPs): no accuracies given" if rank_by == SIZE else rank_by


def markdown(s, measured: str, memory: str) -> str:
    dates = sorted({r["measured"][:10] for r in s.rows})
    lines = [f"### DN selection: {measured}", "",
             f"Latency: median of {s.settings.repeats} rounds interleaved across the DNs after {s.settings.warmup} "
             f"warm-up rounds, spread q1-q3 (measured {' to '.join(dict.fromkeys([dates[0], dates[-1]]))}). "
             f"Memory: {memory}. Ranked by {_rank_label(s.rank_by)}; budget: {s.budget.describe()}. Pareto: no "
             f"other DN is at least as fast and as {'large' if s.rank_by == SIZE else 'accurate'}, and better in one.",
             "", *[f"{note}." for note in s.notes], f"**Chosen: {s.choice.reason}.**" if s.choice else
             "**No DN meets the budget.**", "",
             "| DN | GFLOPs | params (M) | latency ms | q1-q3 ms | memory MB | " + "".join(f"{c} | " for c in s.columns)
             + "Pareto | within budget | from cache |",
             "|---|---:|---:|---:|---:|---:|" + "---:|" * len(s.columns) + "---|---|---|"]
    for r in s.rows:
        dn = f"**{r['dn']}** (chosen)" if r["chosen"] else r["dn"]
        accuracies = "".join(f"{r[c]:.2f} | " if r.get(c) is not None else "| " for c in s.columns)
        lines.append(f"| {dn} | {r['flops'] / 1e9:.3f} | {r['params'] / 1e6:.2f} | {r['latency_ms']:.1f} | "
                     f"{r['latency_q1_ms']:.1f}-{r['latency_q3_ms']:.1f} | {r['memory_mb']:.0f} | {accuracies}"
                     f"{'yes' if r['pareto'] else ''} | {'yes' if r['within_budget'] else 'no'} | "
                     f"{r['measured'][:10] if r['cached'] else ''} |")
    return "\n".join(lines) + "\n"


def plot_selection(s, path: str, title: str) -> None:
    """Accuracy (or, without accuracies, FLOPs) against latency and against FLOPs (without: memory against
    latency), one colour per family, quartile bars on latency; the Pareto front, the budget lines, the chosen DN."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y_key, y_label = (s.rank_by, s.rank_by) if s.rank_by != SIZE else ("gflops", "GFLOPs")
    rows = [{**r, "gflops": r["flops"] / 1e9} for r in s.rows]
    budget = {"gflops" if key == "flops" else key: (limit / 1e9 if key == "flops" else limit, words)
              for key, limit, words in s.budget.limits()}  # plotted keys: the limit and its words
    panels = [("latency_ms", "latency (ms, median; bars q1-q3)", y_key, y_label)]
    panels.append(("gflops", "GFLOPs", y_key, y_label) if s.rank_by != SIZE
                  else ("latency_ms", "latency (ms, median; bars q1-q3)", "memory_mb", "peak memory (MB)"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, (x_key, x_label, y, label) in zip(axes, panels):
        points = [r for r in rows if r.get(y) is not None]
        for family in dict.fromkeys(r["dn"].split("_")[0] for r in points):
            group = [r for r in points if r["dn"].startswith(family + "_")]
            xerr = ([[r["latency_ms"] - r["latency_q1_ms"] for r in group], [r["latency_q3_ms"] - r["latency_ms"]
                                                                             for r in group]]
                    if x_key == "latency_ms" else None)
            ax.errorbar([r[x_key] for r in group], [r[y] for r in group], xerr=xerr, fmt="o", ms=5, capsize=2,
                        label=family)
        for r in points:
            ax.annotate(r["dn"], (r[x_key], r[y]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if y == y_key:  # higher is better: draw the front
            front = sorted((r for r in points if r["dn"] in pareto_front(points, x_key, y)), key=lambda r: r[x_key])
            ax.plot([r[x_key] for r in front], [r[y] for r in front], "--s", color="grey", lw=1, ms=9, mfc="none",
                    label="Pareto front")
        if x_key in budget:
            ax.axvline(budget[x_key][0], color="red", lw=1, ls=":", label=budget[x_key][1])
        if y in budget:
            ax.axhline(budget[y][0], color="red", lw=1, ls=":", label=budget[y][1])
        chosen = [r for r in points if r["chosen"]]
        if chosen:
            ax.plot(chosen[0][x_key], chosen[0][y], "*", color="red", ms=16, mfc="none",
                    label=f"chosen {chosen[0]['dn']}")
        for set_scale, key in ((ax.set_xscale, x_key), (ax.set_yscale, y if y in ("gflops", "memory_mb") else None)):
            values = [r[key] for r in points] if key else []
            if values and min(values) > 0 and max(values) > 10 * min(values):  # MobileNets and ResNets both readable
                set_scale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
