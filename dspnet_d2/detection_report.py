"""The detection report of Mask R-CNN runs: the AP^bb / AP^mk table (markdown + CSV) and a plot of AP vs
backbone FLOPs (tools/detection_report.py; needs no detectron2).

A run is a tools/train_net.py OUTPUT_DIR; its metrics come from final_results.json, else from the last
evaluation in metrics.json; runs without any are listed as missing, never dropped silently.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import sys

import yaml

from .complexity import dn_complexity
from .dn import parse_dn
from .errors import cli_main

__all__ = ["detection_report", "read_run", "collect", "write", "METRICS", "COLUMNS"]

METRICS = [("bbox", "AP"), ("bbox", "AP50"), ("bbox", "AP75"), ("segm", "AP"), ("segm", "AP50"), ("segm", "AP75")]
COLUMNS = ["series", "dn", "params", "flops"] + [f"{task}/{name}" for task, name in METRICS] + ["no_detections", "run"]


def read_run(path: str) -> tuple[str | None, dict | None]:
    """(DN, flat metrics like {"bbox/AP": ...}) of a run directory; metrics None if not finished."""
    dn = None
    config = os.path.join(path, "config.yaml")
    if os.path.exists(config):
        with open(config) as f:
            dn = (yaml.safe_load(f) or {}).get("MODEL", {}).get("DSPNET", {}).get("DN")
    final = os.path.join(path, "final_results.json")
    if os.path.exists(final):
        with open(final) as f:
            data = json.load(f)
        flat = {f"{task}/{name}": value for task, values in data["results"].items() for name, value in values.items()}
        # detectron2's COCOEvaluator reports NaN (bbox) and nothing (segm) for a model without a single
        # detection; its AP is 0 (no recall), and the table marks it
        if any(not math.isfinite(flat.get(f"{task}/AP", math.nan)) for task in ("bbox", "segm")):
            flat = {f"{t}/{n}": 0.0 for t, n in METRICS} | {"no_detections": True}
        return data.get("dn", dn), flat
    metrics = os.path.join(path, "metrics.json")
    if os.path.exists(metrics):
        with open(metrics) as f:
            evals = [json.loads(line) for line in f if '"bbox/AP"' in line]
        if evals:
            return dn, evals[-1]
    return dn, None


def expand_runs(runs: list[str]) -> list[tuple[str, str]]:
    """``(series, run_dir)`` of each ``[SERIES=]run_dir`` argument; a run_dir with ``*``, ``?`` or ``[`` is a
    pattern (``SERIES=output/detection/dspnet_*``: the shell leaves it alone after ``=``), expanded to its
    folders; a pattern that matches none is kept, to be listed as missing."""
    found = []
    for arg in runs:
        series, _, path = arg.rpartition("=") if "=" in arg else ("run", "", arg)
        matches = sorted(p for p in glob.glob(path) if os.path.isdir(p)) if glob.has_magic(path) else [path]
        found += [(series, match) for match in matches or [path]]
    return found


def collect(runs: list[str]) -> tuple[list[dict], list[str]]:
    """Table rows of the finished runs of ``runs`` (``[SERIES=]run_dir``, patterns expanded) and a note per
    missing one."""
    rows, missing = [], []
    for series, path in expand_runs(runs):
        dn, metrics = read_run(path)
        if dn is None or metrics is None or any(f"{t}/{n}" not in metrics for t, n in METRICS):
            missing.append(f"{path} ({'no config' if dn is None else 'no final COCO metrics'})")
            continue
        size = dn_complexity(parse_dn(dn))  # the run's config value, read here
        rows.append({"series": series, "dn": dn, "params": size["params"], "flops": size["flops"], "run": path,
                     "no_detections": metrics.get("no_detections", False),
                     **{f"{t}/{n}": metrics[f"{t}/{n}"] for t, n in METRICS}})
    rows.sort(key=lambda r: (r["series"], r["flops"]))
    return rows, missing


def write(rows: list[dict], missing: list[str], out: str) -> None:
    """detection.csv, detection.md and detection.png in ``out``."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "detection.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| series | DN | params (M) | FLOPs (M) | AP^bb | AP^bb_50 | AP^bb_75 | AP^mk | AP^mk_50 | AP^mk_75 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        values = " | ".join(f"{r[f'{t}/{n}']:.1f}" for t, n in METRICS)
        dn = f"{r['dn']} (no detections)" if r["no_detections"] else r["dn"]
        lines.append(f"| {r['series']} | {dn} | {r['params'] / 1e6:.2f} | {r['flops'] / 1e6:.0f} | {values} |")
    if missing:
        lines += ["", "Missing or unfinished runs:"] + [f"- {m}" for m in missing]
    with open(os.path.join(out, "detection.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(rows, os.path.join(out, "detection.png"))


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, task, label in ((axes[0], "bbox", "AP^bb"), (axes[1], "segm", "AP^mk")):
        for series in dict.fromkeys(r["series"] for r in rows):
            points = [r for r in rows if r["series"] == series]
            ax.plot([r["flops"] / 1e6 for r in points], [r[f"{task}/AP"] for r in points], marker="o", label=series)
        ax.set_xlabel("backbone FLOPs (M)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def detection_report(runs: list[str], output_dir: str) -> int:
    """``runs`` (``[SERIES=]run_dir``) as detection.{md,csv,png} in ``output_dir``; prints the table."""
    rows, missing = collect(runs)
    write(rows, missing, output_dir)
    print(open(os.path.join(output_dir, "detection.md")).read(), end="")
    return 0


COMMAND_HELP = """Collect Mask R-CNN runs into the AP^bb / AP^mk table (markdown + CSV) and a plot of AP vs FLOPs.

    python tools/detection_report.py DSPNet=output/detection/dspnet_* BYOL=output/detection/byol_* -o report/
    python tools/detection_report.py output/detection/demo

Each argument is a run directory (tools/train_net.py's OUTPUT_DIR), optionally prefixed by a series
name; a directory with * ? [ is a pattern, expanded here (the shell does not expand it after "SERIES="). A run's metrics come from final_results.json, else from the last evaluation in metrics.json;
runs without any are listed as missing, never dropped silently.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dspnet_d2.detection_report", description=COMMAND_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="[SERIES=]run directory")
    parser.add_argument("-o", "--output", default="report", help="folder for detection.md/.csv/.png")
    args = parser.parse_args(argv)
    return detection_report(args.runs, args.output)


if __name__ == "__main__":
    sys.exit(cli_main(main))
