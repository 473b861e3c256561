"""The pipeline's report.md (every table and picture of the run, linked, and each stage's time) and the summary
it prints."""
from __future__ import annotations

import os
import time

from .config import SERIES, STAGES


def _read(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read().strip()


def _link(pipeline, path: str) -> str:
    return os.path.relpath(path, pipeline.out)


def _stage_rows(pipeline) -> list[str]:
    rows = ["| # | stage | status | time (min) | run by |", "|---|---|---|---:|---|"]
    for number, name in enumerate(pipeline.stages, 1):
        entries = {k: v for k, v in pipeline.state.items() if k == name or k.startswith(name + "/")}
        seconds = [e["seconds"] for e in entries.values() if "seconds" in e]
        took = f"{sum(seconds) / 60:.1f}" if seconds and len(seconds) == len(entries) else ""
        commands = [c for e in entries.values() for c in e.get("commands", [])]
        command = f"`{commands[0]}`" + (f" (+{len(commands) - 1} more)" if len(commands) > 1 else "") if commands else ""
        rows.append(f"| {number} | {name} | {pipeline.summary.get(name, 'not run yet')} | {took} | {command} |")
    return rows


def write_report(pipeline) -> str:
    """Write OUTPUT_DIR/report.md from what the stages left; returns its path."""
    p = pipeline.paths
    lines = [f"# DSPNet pipeline: `{pipeline.config_file}`", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M')}; the resolved configuration is [config.yaml](config.yaml), "
             f"each stage's command and time [{os.path.basename(pipeline.state_path)}]"
             f"({os.path.basename(pipeline.state_path)}). Times are of the run that finished the stage.", "",
             "## Stages", "", *_stage_rows(pipeline), ""]

    lines += ["## 1. Pretraining", "",
              f"Recipe `{pipeline.cfg.PRETRAIN.CONFIG_FILE}`, DNs {', '.join(f'`{d}`' for d in pipeline.dns)}; run folder "
              f"[{_link(pipeline, p['pretrain'])}]({_link(pipeline, p['pretrain'])}) (checkpoints, `export/<dn>.pth`, "
              "metrics, TensorBoard logs).", ""]
    monitor = os.path.join(p["pretrain"], "knn_monitor.png")
    if os.path.exists(monitor):
        lines += [f"![kNN monitor during pretraining]({_link(pipeline, monitor)})", ""]

    lines += ["## 2. kNN top-1 of every DN", ""]
    knn = _read(os.path.join(p["knn"], "results.md"))
    lines += [knn, "", f"![kNN top-1 vs FLOPs]({_link(pipeline, os.path.join(p['knn'], 'accuracy.png'))})"] if knn else \
        ["Not run yet."]
    lines += [""]

    lines += ["## 3. detectron2 weights", ""]
    lines += [f"[{_link(pipeline, p['pkl'])}]({_link(pipeline, p['pkl'])}) holds every DN of the supernet; the "
              "backbone slices the selected `MODEL.DSPNET.DN` out of it when loading.", ""] \
        if os.path.exists(p["pkl"]) else ["Not run yet.", ""]

    lines += ["## 4-5. Mask R-CNN: AP^bb / AP^mk", ""]
    table = _read(os.path.join(p["ap_table"], "detection.md"))
    if table:
        lines += [f"Detection config `{pipeline.cfg.DETECTION.CONFIG_FILE}`; runs under `detection/<init>_<dn>`.", "",
                  table, "", f"![AP vs backbone FLOPs]({_link(pipeline, os.path.join(p['ap_table'], 'detection.png'))})", ""]
    else:
        lines += [f"Not run: {pipeline.summary.get('detection') or pipeline.summary.get('ap_table') or 'not yet'}.", ""]

    lines += ["## 6. Predictions on val images", ""]
    pictures = [dn for dn in pipeline.detection_dns if os.path.exists(pipeline.picture(dn))]
    if pictures:
        inits = ", ".join(SERIES[i] for i in pipeline.cfg.DETECTION.INITS)
        lines += [f"Columns: the ground truth, then {inits}; predictions with score >= "
                  f"{pipeline.cfg.PICTURES.SCORE_THRESHOLD} on the first {pipeline.cfg.PICTURES.NUM_IMAGES} images of "
                  f"`{pipeline.cfg.PICTURES.DATASET}`.", ""]
        for dn in pictures:
            lines += [f"### {dn}", "", f"![{dn}]({_link(pipeline, pipeline.picture(dn))})", ""]
    else:
        lines += [f"Not drawn: {pipeline.summary.get('pictures') or 'not yet'}.", ""]

    os.makedirs(pipeline.out, exist_ok=True)
    with open(p["report"] + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(p["report"] + ".tmp", p["report"])
    return p["report"]


def print_summary(pipeline) -> None:
    print("\n" + "=" * 100 + "\nsummary")
    for number, name in enumerate(STAGES, 1):
        seconds = pipeline.state.get(name, {}).get("seconds")
        print(f"  {number}. {name:<10} {pipeline.summary.get(name, '')}"
              + (f" [{seconds / 60:.1f} min]" if seconds is not None else ""))
    for label, key in (("pretraining", "pretrain"), ("kNN", "knn"), ("detectron2 weights", "pkl"),
                       ("AP table", "ap_table"), ("pictures", "pictures"), ("report", "report")):
        if os.path.exists(pipeline.paths[key]):
            print(f"  {label:<20} {pipeline.paths[key]}")
