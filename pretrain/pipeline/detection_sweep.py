"""The paper's detection table in one command: every DN of a set fine-tuned as Mask R-CNN, then the AP table.

For each DN: its weights from the pretraining checkpoint (``convert_to_d2 --dn``, BN statistics recalibrated on
``--data-root``: the paper's route), then ``tools/train_net.py`` with that DN and those weights, one run folder per
DN; at the end ``tools/detection_report.py`` over all of them. The runs go one after another here (``--num-gpus`` each),
or as a Slurm job array (``--slurm``: one job of ``--nodes`` x ``--gpus-per-node`` per DN, requeued until done).
Run it again to resume: converted weights and finished runs are kept, and each run resumes from its checkpoint.
"""
from __future__ import annotations

import argparse
import os
import sys

from dspnet_d2.detection_report import detection_report
from dspnet_d2.dn import DNSpec, dn_set
from dspnet_d2.errors import EXIT_PREEMPTED, InvalidInputError, MissingFileError, cli_main

from ..engine.preemption import ForwardedChild
from ..engine.slurm import submit_array

__all__ = ["sweep_commands", "run_sweep", "main"]


def sweep_commands(checkpoint: str, dns: tuple[DNSpec, ...], config_file: str, output: str,
                   data_root: str | None = None, opts: tuple[str, ...] = (), num_gpus: int = 1,
                   demo_root: str | None = None) -> dict[DNSpec, tuple[list[str], list[str]]]:
    """``{dn: (conversion command, training command)}``, as run for one process (``num_gpus`` > 1: detectron2's
    launcher; 1 under Slurm, whose tasks are the processes)."""
    recalibration = ["--data-root", data_root] if data_root else ["--no-bn-recalibration"]
    commands = {}
    for dn in dns:
        weights = os.path.join(output, "weights", f"{dn}.pkl")
        convert = [sys.executable, "-m", "dspnet_d2.deploy.convert_to_d2", checkpoint, "--dn", str(dn),
                   *recalibration, "-o", weights]
        train = [sys.executable, "-m", "dspnet_d2.d2.train_net", "--config-file", config_file, "--resume",
                 *(["--num-gpus", str(num_gpus)] if num_gpus > 1 else []),
                 *(["--demo-root", demo_root] if demo_root else []), *opts,
                 "MODEL.DSPNET.DN", str(dn), "MODEL.WEIGHTS", weights, "OUTPUT_DIR", os.path.join(output, str(dn))]
        commands[dn] = (convert, train)
    return commands


def _run(command: list[str]) -> int:
    print(f"$ {' '.join(command)}", flush=True)
    child = ForwardedChild(command)
    status = child.run()
    return EXIT_PREEMPTED if child.signalled else status


def run_sweep(*, checkpoint: str, dns: tuple[DNSpec, ...], config_file: str, output: str, series: str = "DSPNet",
              data_root: str | None = None, opts: tuple[str, ...] = (), num_gpus: int = 1, demo_root: str | None = None,
              slurm: dict | None = None, wait: bool = True) -> int:
    """Convert, train and report (module docstring); 0, ``EXIT_PREEMPTED`` when a signal stopped a run, or the
    failing command's status. ``slurm``: ``submit_array``'s keyword arguments, to run the trainings as jobs."""
    for path, what in ((checkpoint, "pretraining checkpoint"), (config_file, "config file")):
        if not os.path.isfile(path):
            raise MissingFileError(f"{what} {path!r} does not exist")
    commands = sweep_commands(checkpoint, dns, config_file, output, data_root, opts, 1 if slurm else num_gpus,
                              demo_root)
    for dn, (convert, _) in commands.items():
        if not os.path.exists(convert[-1]):
            os.makedirs(os.path.dirname(convert[-1]), exist_ok=True)
            if (status := _run(convert)) != 0:
                return status
    todo = [train for dn, (_, train) in commands.items()
            if not os.path.exists(os.path.join(output, str(dn), "final_results.json"))]
    report = [f"{series}={os.path.join(output, str(dn))}" for dn in dns]
    report_dir = os.path.join(output, "report")
    if slurm and todo:
        jobs = submit_array(todo, folder=os.path.join(output, "submitit"), **slurm)
        print(f"submitted {len(jobs)} job(s): {', '.join(job.job_id for job in jobs)}; logs in {output}/submitit",
              flush=True)
        if not wait:
            print(f"when they are done: python tools/detection_report.py {' '.join(report)} -o {report_dir}")
            return 0
        for job in jobs:
            job.results()  # raises with the job's own error if it failed
    else:
        for train in todo:
            if (status := _run(train)) != 0:
                return status
    return detection_report(report, report_dir)


COMMAND_HELP = """Every DN of a set as Mask R-CNN (the paper's detection table), then the AP^bb / AP^mk table and plot.

    # 2 nodes x 8 GPUs per DN, the 5 MobileNetV3 DNs as a Slurm job array, 48 h per job (requeued until done)
    python tools/detection_sweep.py output/dspnet_mbv3_imagenet/checkpoint_XXXXXXXX.pth --dns mbv3_s5 \\
        --config-file configs/detection/Base-DSPNet-MaskRCNN-FPN.yaml --data-root /data/imagenet \\
        -o output/detection/dspnet_mbv3 --slurm --nodes 2 --gpus-per-node 8 --time 48 --partition gpu
    # one after another on this machine's 8 GPUs
    python tools/detection_sweep.py CKPT --dns resnet_s9 --config-file configs/detection/Base-DSPNet-MaskRCNN-FPN.yaml \\
        --data-root /data/imagenet -o output/detection/dspnet_resnet --num-gpus 8

Writes OUTPUT/weights/<dn>.pkl, a run folder OUTPUT/<dn> per DN and the table in OUTPUT/report. KEY VALUE pairs after
the options go to every training. Run the same command again to resume.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.pipeline.detection_sweep", description=COMMAND_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="the pretraining checkpoint (checkpoint_XXXXXXXX.pth)")
    parser.add_argument("--dns", required=True, help="a DN set (mbv3_s5, resnet_s9) or DNs separated by commas")
    parser.add_argument("--config-file", required=True, help="the detection config every DN trains with")
    parser.add_argument("-o", "--output", required=True, help="folder of the weights, the runs and the report")
    parser.add_argument("--data-root", default=None, help="ImageNet (train/<class>/...): each DN's BN statistics are "
                        "recalibrated on it before the conversion (without it: the supernet's shared statistics)")
    parser.add_argument("--series", default="DSPNet", help="the table's series name")
    parser.add_argument("--num-gpus", type=int, default=1, help="GPUs of each run on this machine")
    parser.add_argument("--demo-root", default=None, help="the demo COCO data (the demo config)")
    parser.add_argument("--slurm", action="store_true", help="run the trainings as a Slurm job array")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--time", type=float, default=24.0, help="each job's time limit in hours")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--local", action="store_true", help="with --slurm: submitit's local executor")
    parser.add_argument("--no-wait", action="store_true", help="with --slurm: submit and exit (no report)")
    args, args.opts = parser.parse_known_args(argv)  # the rest: KEY VALUE pairs for every training
    unknown = [word for word in args.opts if word.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if len(args.opts) % 2:
        raise InvalidInputError(f"KEY VALUE pairs expected after the options, got {args.opts}")
    slurm = dict(nodes=args.nodes, gpus_per_node=args.gpus_per_node, hours=args.time, partition=args.partition,
                 local=args.local) if args.slurm else None
    return run_sweep(checkpoint=args.checkpoint, dns=dn_set(args.dns),
                     config_file=args.config_file, output=args.output, series=args.series, data_root=args.data_root,
                     opts=tuple(args.opts), num_gpus=args.num_gpus, demo_root=args.demo_root, slurm=slurm,
                     wait=not args.no_wait)


if __name__ == "__main__":
    sys.exit(cli_main(main))
