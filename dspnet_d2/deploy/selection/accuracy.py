"""Accuracy columns per DN from a run's own results: an evaluation or supervised ``results.json`` / ``results.csv``
(``pretrain/eval/report.py``) and a detection ``detection.csv`` (``tools/detection_report.py``), and their join with the DNs'
measurements at the resolution each DN was measured at.

Each (series, metric) of a file is one column, e.g. ``DSPNet knn top-1`` or ``DSPNet AP^bb``; a column name
that an earlier file already gave is suffixed with the folder of the later file.
"""
from __future__ import annotations

import csv
import json
import os

from ...dn import parse_dn
from ...errors import InvalidInputError, MissingFileError

__all__ = ["read_accuracies", "results_file", "join_accuracies", "Table"]

DETECTION_METRICS = (("bbox/AP", "AP^bb"), ("segm/AP", "AP^mk"))
# DN -> column -> the resolution it was evaluated at (None: its file states none) -> value
Table = dict[str, dict[str, dict[int | None, float]]]


def results_file(path: str) -> str:
    """``path``, or the results file of the run folder ``path`` (results.json, else detection.csv)."""
    if os.path.isdir(path):
        for name in ("results.json", "detection.csv"):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise MissingFileError(f"{path} holds neither results.json nor detection.csv")
    if not os.path.isfile(path):
        raise MissingFileError(f"results file {path} does not exist")
    return path


def read_accuracies(paths: list[str]) -> tuple[list[str], Table]:
    """(column names in order, ``Table``) of every file of ``paths``."""
    columns, table = [], {}
    for path in paths:
        path = results_file(path)
        file_columns = {}
        for series_metric, dn, value, resolution in _entries(path):
            name = file_columns.setdefault(series_metric, _unique(series_metric, path, columns))
            if name not in columns:
                columns.append(name)
            table.setdefault(dn, {}).setdefault(name, {})[resolution] = value
    return columns, table


def join_accuracies(rows: list[dict], columns: list[str], table: Table) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Give each row (a DN measured at ``row["resolution"]``) its DN's accuracies evaluated at that resolution:
    an accuracy of another resolution ranks a DN by what it is not deployed as. An accuracy whose file states
    no resolution is joined as it is. Returns, per column, the DNs left without it and why; and the notes
    on what was joined or not."""
    missing, other, unstated = {c: {} for c in columns}, {}, set()
    for row in rows:
        for column in columns:
            values = table.get(row["dn"], {}).get(column, {})
            if row["resolution"] in values:
                row[column] = values[row["resolution"]]
            elif None in values:
                row[column] = values[None]
                unstated.add(column)
            elif values:
                evaluated = " and ".join(f"{r} px" for r in sorted(values))
                missing[column][row["dn"]] = f"evaluated at {evaluated} only"
                other.setdefault((column, evaluated, row["resolution"]), []).append(row["dn"])
            else:
                missing[column][row["dn"]] = "not in the results"
    notes = [f"{column} evaluated at {evaluated}, not at the {measured} px measured: not joined for {', '.join(dns)}"
             for (column, evaluated, measured), dns in other.items()]
    if unstated:
        notes.append(f"joined without a resolution check (their files state none): {', '.join(sorted(unstated))}")
    return missing, notes


def _unique(name: str, path: str, taken: list[str]) -> str:
    if name not in taken:
        return name
    label = os.path.basename(os.path.dirname(os.path.abspath(path)))
    candidate, i = f"{name} [{label}]", 2
    while candidate in taken:
        candidate, i = f"{name} [{label} {i}]", i + 1
    return candidate


def _entries(path: str):
    """(series and metric, canonical DN, value, evaluation resolution or None) of each result of a file."""
    try:
        if path.endswith(".json"):
            with open(path) as f:
                rows = json.load(f)["results"]
            entries = [(f"{r['series']} {r['protocol'] + ' ' if r.get('protocol') else ''}top-1", r["dn"], r["top1"],
                        r.get("resolution")) for r in rows]
        else:  # results.csv and detection.csv have no resolution column
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            entries = [(*entry, None) for r in rows for entry in _csv_entries(r, path)]
        return [(name, str(parse_dn(dn)), float(value), None if resolution is None else int(resolution))
                for name, dn, value, resolution in entries if value not in (None, "")]
    except (ValueError, KeyError, TypeError) as err:  # JSON errors, missing keys, non-numbers
        raise InvalidInputError(f"{path} is not a results.json, results.csv or detection.csv: {err!r}") from None


def _csv_entries(row: dict, path: str):
    if "top1" in row:
        return [(f"{row['series']} top-1", row["dn"], row["top1"])]
    if "bbox/AP" in row:
        return [(f"{row['series']} {label}", row["dn"], row[key]) for key, label in DETECTION_METRICS]
    raise KeyError(f"no top1 or bbox/AP column in {sorted(row)}")
