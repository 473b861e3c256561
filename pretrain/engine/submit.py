"""``python -m pretrain.engine.submit [OPTIONS] -- COMMAND``: any of the package's commands as a Slurm job
(tools/submit.py); the submission itself is ``pretrain.engine.slurm``."""
from __future__ import annotations

import argparse
import sys

from dspnet_d2.errors import cli_main

from .slurm import submit


COMMAND_HELP = """Submit one of the package's commands to Slurm (through submitit), requeued at the time limit and on
preemption until it is done; each requeued job runs the same command, which resumes from its checkpoints.

    python tools/submit.py --nodes 4 --gpus-per-node 8 --time 24 [--partition P] [--signal-delay 120] \\
        -- python -m pretrain --config-file configs/pretrain/dspnet_mbv3_imagenet.yaml DATA.ROOT /data/imagenet

The command is written as for one process: the job runs one task per GPU, each with the environment
torchrun would give it. A detectron2 training (tools/train_net.py, without --num-gpus) gets --resume, so that a
requeued job resumes (on a first run it loads MODEL.WEIGHTS as without it). Logs go to <the command's OUTPUT_DIR>/submitit (or --folder); the job id is printed.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.engine.submit", description=COMMAND_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--time", type=float, required=True, help="the job's time limit in hours (each requeue "
                        "gets it again)")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--signal-delay", type=int, default=120, help="seconds before the time limit at which the "
                        "run is told to stop with a checkpoint (a step and a checkpoint write must fit)")
    parser.add_argument("--tasks-per-node", type=int, default=None, help="default: one per GPU; 1 for a command "
                        "that starts its own processes (python -m pretrain.pipeline with LAUNCHER torchrun)")
    parser.add_argument("--cpus-per-task", type=int, default=10, help="data-loading cores of each task")
    parser.add_argument("--max-requeues", type=int, default=20, help="time-limit requeues before giving up")
    parser.add_argument("--folder", default=None, help="submitit's folder (logs, job pickles); default "
                        "<OUTPUT_DIR>/submitit")
    parser.add_argument("--local", action="store_true", help="run on this machine under submitit's local executor "
                        "(one node), to try a submission without Slurm")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command, as run for one process")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    job = submit(command, args.nodes, args.gpus_per_node, args.time, args.partition, args.signal_delay, args.folder,
                 args.tasks_per_node, args.cpus_per_task, args.max_requeues, args.local)
    print(f"submitted job {job.job_id}: {args.nodes} node(s) x {args.gpus_per_node} GPU(s); logs in {job.paths.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
