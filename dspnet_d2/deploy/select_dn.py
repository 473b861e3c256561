"""Pick the DN for this machine: every DN measured here with the chosen runtime, joined with the run's
accuracies, the most accurate one within every budget given; optionally exported.

    python tools/select_dn.py output/demo/export --results output/demo_eval/knn/results.json \\
        --runtime onnxruntime --threads 2 --max-latency-ms 10 --export onnx -o output/dn_selection
    python tools/select_dn.py mbv3_s5 resnet_s9 --threads 2 --max-flops 1.0 -o output/dn_selection

SOURCE: a pretraining or supervised checkpoint (every DN of its set), a folder of exported DNs
(export/<dn>.pth), or a DN family / set name or a DN (random weights with ImageNet's 1000-class
classifier: latency only); several sources give their DNs together. --results takes evaluation or
supervised results.json / results.csv and detection.csv files (or their run folders): each series and
metric is an accuracy column, joined at the resolution the DNs are measured at (a result of another
resolution is not joined; a DN left without the ranked column is named in the table); --rank-by picks the
column to maximise (default: the first). Without results, the largest DN (FLOPs) within budget is chosen.

Writes OUT/dn_selection.{md,csv,json,png}; the measurements are cached in OUT/dn_measurements.json per
(machine, device, runtime, threads, batch, resolution, warm-up and timed rounds, DN), so a rerun or a new
budget measures nothing again (--remeasure does); the table marks the rows that came from the cache. --export writes the chosen DN with tools/export_dn.py, whose parity check runs
(to --export-file, default OUT/<dn> with the format's suffix: .onnx, .pt, .pt2, ...).
"""
import argparse
import sys

from ..errors import cli_main
from .commands import select_and_export_dn
from .formats import formats
from .selection import Budget, Settings, runtimes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dspnet_d2.deploy.select_dn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="checkpoint, folder of exported DNs, or DN set name")
    parser.add_argument("--results", nargs="+", default=[], metavar="FILE", help="results.json / .csv, detection.csv")
    parser.add_argument("--rank-by", default=None, metavar="COLUMN", help="accuracy column to maximise")
    budget = parser.add_argument_group("budgets (each optional; a DN must meet all)")
    budget.add_argument("--max-latency-ms", type=float, default=None, help="median latency, ms")
    budget.add_argument("--max-flops", type=float, default=None, metavar="G", help="GFLOPs of one image")
    budget.add_argument("--max-params", type=float, default=None, metavar="M", help="million parameters")
    budget.add_argument("--max-memory-mb", type=float, default=None, metavar="MB", help="peak memory, MiB")
    run = parser.add_argument_group("how the DNs run")
    run.add_argument("--runtime", default="eager", help=" | ".join(runtimes()) + " (default: eager)")
    run.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    run.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    run.add_argument("--batch", type=int, default=1)
    run.add_argument("--resolution", type=int, default=None, help="input size (default: the family's, 224)")
    run.add_argument("--amp", action="store_true", help="CUDA eager: bf16 autocast")
    run.add_argument("--channels-last", action="store_true", help="eager / TorchScript: channels_last")
    run.add_argument("--warmup", type=int, default=3, help="untimed rounds (default: 3)")
    run.add_argument("--repeats", type=int, default=20, help="timed rounds, interleaved across DNs (default: 20)")
    run.add_argument("--remeasure", action="store_true", help="ignore the cache")
    export = parser.add_argument_group("export of the chosen DN (tools/export_dn.py)")
    export.add_argument("--export", default=None, metavar="FORMAT", help=" | ".join(formats()))
    export.add_argument("--export-file", default=None, metavar="FILE", help="default: OUT/<dn><the format's suffix>")
    export.add_argument("--data-root", default=None, help="a supernet checkpoint's DN: recalibrate BN on these images")
    export.add_argument("--no-bn-recalibration", action="store_true", help="... or keep the shared BN statistics")
    parser.add_argument("-o", "--output-dir", default="output/dn_selection", metavar="OUT",
                        help="folder of the table, plot and measurement cache (default: output/dn_selection)")
    args = parser.parse_args(argv)
    return select_and_export_dn(
        args.sources, args.output_dir, args.results, rank_by=args.rank_by, remeasure=args.remeasure,
        budget=Budget(args.max_latency_ms, args.max_flops, args.max_params, args.max_memory_mb),
        settings=Settings(args.runtime, args.device, args.threads, args.batch, args.resolution, args.amp,
                          args.channels_last, args.warmup, args.repeats),
        export=args.export, export_file=args.export_file, data_root=args.data_root,
        no_bn_recalibration=args.no_bn_recalibration)


if __name__ == "__main__":
    sys.exit(cli_main(main))
