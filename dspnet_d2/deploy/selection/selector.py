"""``select_dn``: every DN of the sources measured here, joined with the run's accuracies, chosen under a
budget, written as ``dn_selection.{md,csv,json,png}``; and the request to export the chosen DN."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ...errors import InvalidInputError
from ...recalibration import RecalibrationOptions, check_recalibration_args
from ..formats import get_format
from .accuracy import join_accuracies, read_accuracies
from .choose import SIZE, Budget, Choice, choose, pareto_front
from .measure import measure
from .memory import memory_method, peak_memory
from .report import write_selection
from .settings import Settings
from .sources import Candidate, open_sources
from .timing import wall_clock

__all__ = ["ExportRequest", "Selection", "select_dn"]


@dataclass(frozen=True)
class ExportRequest:
    """Write the chosen DN with ``export_dn_file`` (the export path with its parity check)."""

    format: str  # a name of formats(): onnx | torchscript | pt2 | state_dict | a registered format
    file: str | None = None  # None: OUT/<dn><the format's suffix>
    data_root: str | None = None  # a supernet checkpoint's DN: recalibrate its BN statistics on these images
    no_bn_recalibration: bool = False  # ... or keep the supernet's shared ones

    def check(self, candidates: list[Candidate]) -> None:
        """Refuse, before anything is measured, an export that could not be done."""
        fmt = get_format(self.format)
        random = [str(c.dn) for c in candidates if c.path is None]
        if random:
            raise InvalidInputError(f"--export needs trained weights, and {', '.join(random)} come from a name "
                                    "(random weights): give a checkpoint or a folder of exported DNs")
        recalibration = RecalibrationOptions(data_root=self.data_root, no_bn_recalibration=self.no_bn_recalibration)
        check_recalibration_args(recalibration, any(c.shares_bn for c in candidates))  # the export's own rule
        fmt.requires()

    def output(self, dn: str, output_dir: str) -> str:
        """The file the chosen DN ``dn`` is written to."""
        return self.file or os.path.join(output_dir, dn + get_format(self.format).suffix)


@dataclass
class Selection:
    rows: list[dict]  # one per DN: figures, accuracies, pareto, within_budget, chosen
    settings: Settings
    budget: Budget
    columns: list[str]  # the accuracy columns, in the order of --results
    rank_by: str  # an accuracy column, or "flops" (no accuracies)
    choice: Choice | None  # None: no DN meets the budget
    candidates: dict[str, Candidate] = field(repr=False)
    paths: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> Candidate:
        return self.candidates[self.choice.dn]

    def row(self, dn: str) -> dict:
        return next(r for r in self.rows if r["dn"] == dn)

    def summary(self) -> str:
        """The files written and the choice with its reason (the table's notes are in the table)."""
        return "wrote " + ", ".join(self.paths.values()) + f"\nchosen: {self.choice.reason}"


def select_dn(sources: "list[str] | str", output_dir: str, results: "list[str] | tuple" = (), budget: Budget = Budget(),
              settings: Settings = Settings(), rank_by: str | None = None, export: ExportRequest | None = None,
              remeasure: bool = False, timer=wall_clock, memory=peak_memory, log=print) -> Selection:
    """Measure every DN of ``sources`` (cached in ``output_dir``), join the accuracies of ``results``, choose
    the DN with the highest ``rank_by`` (default: the first accuracy column; without results, the most
    FLOPs) within ``budget``, and write the table and plot. A budget no DN meets is an InvalidInputError,
    raised after the table and plot of every DN are written."""
    settings = settings.resolved()
    budget.limits()  # a bad budget fails before anything is measured
    columns, accuracies = read_accuracies(list(results))
    if rank_by is not None and rank_by not in columns:
        raise InvalidInputError(f"--rank-by {rank_by!r} is not an accuracy column; the columns: "
                                f"{', '.join(columns) or 'none (no --results)'}")
    candidates = {str(c.dn): c for c in open_sources(sources)}
    if export is not None:
        export.check(list(candidates.values()))
    notes = []
    if not columns:
        notes.append("no accuracies (--results): ranked by size, the DN with the most FLOPs within budget")
    unmeasured = sorted(set(accuracies) - set(candidates))
    if unmeasured:
        notes.append(f"results of DNs not among the sources, left out: {', '.join(unmeasured)}")
    records = measure({dn: c.model for dn, c in candidates.items()}, settings, output_dir, timer, memory, remeasure,
                      log)
    rows = [{**records[dn], "weights": c.path or "random (a name)"} for dn, c in candidates.items()]
    missing, join_notes = join_accuracies(rows, columns, accuracies)
    notes += join_notes
    score = rank_by or (columns[0] if columns else SIZE)
    if missing.get(score):
        notes.append(f"without {score}, left out of the ranking: "
                     + ", ".join(f"{dn} ({why})" for dn, why in missing[score].items()))
    front = pareto_front(rows, "latency_ms", score)
    limits = budget.limits()
    resolutions = {r["resolution"] for r in rows}
    measured = settings.describe(resolutions.pop() if len(resolutions) == 1 else None)
    try:
        choice, error = choose(rows, budget, score, "FLOPs" if score == SIZE else score, measured,
                               missing.get(score, {})), None
    except InvalidInputError as err:
        choice, error = None, err
    for r in rows:
        r.update(pareto=r["dn"] in front, within_budget=all(r[key] <= limit for key, limit, _ in limits),
                 chosen=choice is not None and r["dn"] == choice.dn)
    selection = Selection(rows, settings, budget, columns, score, choice, candidates, notes=notes)
    selection.paths = write_selection(selection, output_dir, measured, memory_method(settings.device))
    if error is not None:
        raise error
    return selection
