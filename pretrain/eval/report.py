"""Per-DN accuracy tables (markdown, CSV, JSON) and the accuracy-vs-FLOPs/params plot: of an evaluation, of a
supervised run's final evaluation, of several runs compared (``compare_runs``)."""
from __future__ import annotations

import csv
import json
import os

from dspnet_d2.errors import InvalidInputError, MissingFileError

FIELDS = ("series", "dn", "params", "flops", "top1", "top5")


def write_report(results: list[dict], output_dir: str, title: str) -> dict[str, str]:
    """Writes results.{md,csv,json} and accuracy.png into ``output_dir``; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {ext: os.path.join(output_dir, f"results.{ext}") for ext in ("md", "csv", "json")}
    paths["png"] = os.path.join(output_dir, "accuracy.png")
    with open(paths["json"], "w") as f:
        json.dump({"title": title, "results": results}, f, indent=2)
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    notes = sorted({len(r["seeds"]) for r in results if len(r.get("seeds", ())) > 1})
    lines = [f"### {title}", ""] + [f"random init: mean ± std over {n} seeds" for n in notes] + [""] * bool(notes)
    lines += ["| series | DN | params (M) | FLOPs (M) | top-1 | top-5 |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['series']} | {r['dn']} | {r['params'] / 1e6:.2f} | {r['flops'] / 1e6:.1f} | {_acc(r, 'top1')} "
              f"| {_acc(r, 'top5')} |" for r in results]
    with open(paths["md"], "w") as f:
        f.write("\n".join(lines) + "\n")
    plot_accuracy(results, paths["png"], title)
    return paths


def _acc(result: dict, key: str) -> str:
    """Accuracy cell; a mean over several random inits shows its spread (std over seeds)."""
    if len(result.get("seeds", ())) > 1:
        return f"{result[key]:.2f} ± {result[key + '_std']:.2f}"
    return f"{result[key]:.2f}"


def plot_accuracy(results: list[dict], path: str, title: str) -> None:
    """Top-1 vs FLOPs and vs params, one line per series (the shape of the paper's Fig. 4/5/7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for series in dict.fromkeys(r["series"] for r in results):
        rows = sorted((r for r in results if r["series"] == series), key=lambda r: r["flops"])
        for ax, key, scale in ((axes[0], "flops", 1e6), (axes[1], "params", 1e6)):
            ax.plot([r[key] / scale for r in rows], [r["top1"] for r in rows], marker="o", label=series)
    for ax, label in ((axes[0], "FLOPs (M)"), (axes[1], "params (M)")):
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_results(run_dir: str) -> list[dict]:
    """The per-DN results of a finished evaluation or supervised run (its OUTPUT_DIR/results.json)."""
    path = os.path.join(run_dir, "results.json")
    if not os.path.isfile(path):
        raise MissingFileError(f"{run_dir} has no results.json (not a finished run)")
    try:
        with open(path) as f:
            return json.load(f)["results"]
    except (ValueError, KeyError) as err:
        raise InvalidInputError(f"{path} is not a results file: {err}") from None
