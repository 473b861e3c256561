"""Pick the DN for a device: every DN measured on this machine with the chosen runtime, joined with the
run's own accuracies, chosen under a budget (``tools/select_dn.py``).

    selection = select_dn("output/demo/export", "output/dn_selection", results=["output/demo_eval/knn/results.json"],
                          budget=Budget(latency_ms=10), settings=Settings(runtime="onnxruntime", threads=2))
    selection.choice.dn, selection.choice.reason
"""
from .accuracy import read_accuracies
from .choose import Budget, Choice, choose, pareto_front
from .measure import measure
from .memory import peak_memory
from .selector import ExportRequest, Selection, select_dn
from .settings import Settings, runtimes
from .sources import Candidate, open_sources
from .timing import time_interleaved, wall_clock

__all__ = ["select_dn", "Selection", "ExportRequest", "Budget", "Choice", "Settings", "runtimes", "Candidate",
           "open_sources", "read_accuracies", "measure", "time_interleaved", "wall_clock", "peak_memory", "choose",
           "pareto_front"]
