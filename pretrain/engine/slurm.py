"""Any of the package's commands as a Slurm job, through submitit (the ``slurm`` extra), requeued until done.

One task per GPU runs the command as written for one process, with the environment torchrun would give
it (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Slurm sends submitit's
signal (USR2) ``signal_delay_s`` before the time limit: the task of rank 0 passes SIGTERM on to its command,
which stops all ranks after the same step with that step's checkpoint (exit status 75), and submitit
requeues the job; the requeued job runs the same command, which resumes. Preemption: Slurm's SIGTERM
reaches every command directly, they stop the same way, and the job is submitted with ``--requeue`` so the
cluster puts it back in the queue.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal

from fvcore.common.config import CfgNode

from dspnet_d2.errors import InvalidInputError, MissingFileError

from .preemption import EXIT_PREEMPTED, ForwardedChild

__all__ = ["ClusterCommand", "import_submitit", "slurm_parameters", "default_folder", "check_command", "prepare_command",
           "submit", "submit_array"]

REQUEUE_SIGNAL = "SIGUSR2"  # submitit's requeue signal (sbatch --signal=USR2@delay); the commands ignore it


def import_submitit():
    try:
        import submitit
    except ImportError as err:
        raise InvalidInputError(f"submitting needs submitit ({err}): pip install 'dspnet[slurm]'") from None
    return submitit


def check_command(command: list[str]) -> None:
    """The command as run for one process: the tasks are the launcher, so torchrun has no place in it."""
    if not command:
        raise InvalidInputError("no command to submit: put it after --, e.g. -- python -m pretrain --config-file ...")
    launchers = [word for word in command[:4] if os.path.basename(word) == "torchrun" or word == "torch.distributed.run"]
    if launchers:
        raise InvalidInputError(f"give the command as for one process, without {launchers[0]}: the job starts one "
                                "task per GPU and gives each the environment torchrun would")


_D2_LAUNCH_FLAGS = ("--num-gpus", "--num-machines", "--machine-rank", "--dist-url")


def prepare_command(command: list[str]) -> list[str]:
    """``command`` checked (``check_command``) and made to resume when requeued: a detectron2 training
    (``tools/train_net.py``) gets ``--resume``, which on a first run loads ``MODEL.WEIGHTS`` as without it."""
    check_command(command)
    at = next((i for i, word in enumerate(command) if word.endswith("train_net.py") or word.endswith("d2.train_net")),
              None)
    if at is None:
        return list(command)
    flags = [flag for flag in _D2_LAUNCH_FLAGS if any(w == flag or w.startswith(flag + "=") for w in command)]
    if flags:
        raise InvalidInputError(f"drop {', '.join(flags)}: each task of the job is one process of the detection "
                                "training (the job has --nodes x --gpus-per-node tasks, one per GPU)")
    return command if "--resume" in command else [*command[:at + 1], "--resume", *command[at + 1:]]


def default_folder(command: list[str]) -> str | None:
    """``<OUTPUT_DIR>/submitit`` of the command (its last OUTPUT_DIR override, else its config file's)."""
    output_dir = None
    for i, word in enumerate(command[:-1]):
        if word == "OUTPUT_DIR":
            output_dir = command[i + 1]
    if output_dir is None and "--config-file" in command[:-1]:
        path = command[command.index("--config-file") + 1]
        if not os.path.isfile(path):
            raise MissingFileError(f"the command's config file {path!r} does not exist")
        output_dir = CfgNode.load_yaml_with_base(path).get("OUTPUT_DIR")
    return os.path.join(output_dir, "submitit") if output_dir else None


def slurm_parameters(nodes: int, gpus_per_node: int, hours: float, tasks_per_node: int | None = None,
                     partition: str | None = None, signal_delay_s: int = 120, cpus_per_task: int = 10,
                     job_name: str = "dspnet") -> dict:
    """submitit's SlurmExecutor parameters of a job of ``nodes`` x ``gpus_per_node`` GPUs."""
    params = dict(nodes=nodes, ntasks_per_node=tasks_per_node or gpus_per_node, gpus_per_node=gpus_per_node,
                  cpus_per_task=cpus_per_task, time=max(1, round(hours * 60)), signal_delay_s=signal_delay_s,
                  job_name=job_name, additional_parameters={"requeue": True})
    if partition:
        params["partition"] = partition
    return params


def torchrun_environment(submitit) -> dict[str, str]:
    """This task's environment, with the variables torchrun sets for a worker."""
    dist_env = submitit.helpers.TorchDistributedEnvironment()
    env = dict(os.environ, MASTER_ADDR=dist_env.master_addr, MASTER_PORT=str(dist_env.master_port),
               RANK=str(dist_env.rank), WORLD_SIZE=str(dist_env.world_size), LOCAL_RANK=str(dist_env.local_rank),
               LOCAL_WORLD_SIZE=str(dist_env.local_world_size))
    if dist_env.local_world_size > 1:
        env.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: the data-loading workers get the cores
    return env


class ClusterCommand:
    """What each task of the job runs: the command, as a child with torchrun's environment. submitit calls
    ``checkpoint`` on rank 0 when its requeue signal comes (the time limit is near, or a preemption)."""

    def __init__(self, command: list[str]):
        self.command = list(command)
        self._child: ForwardedChild | None = None

    def __call__(self) -> str:
        submitit = import_submitit()
        self._child = ForwardedChild(self.command, signals=("SIGTERM", "SIGINT"), env=torchrun_environment(submitit),
                                     ignore=[REQUEUE_SIGNAL])
        status = self._child.run()
        if status == EXIT_PREEMPTED:
            return f"stopped by a signal with its checkpoint (exit status {status}); the requeued job resumes it"
        if status != 0:
            raise RuntimeError(f"{shlex.join(self.command)} ended with exit status {status}; see its log")
        return "finished"

    def checkpoint(self, *args, **kwargs):
        """Stop the command with its checkpoint, then have the same command requeued (it resumes)."""
        if self._child is not None:
            self._child.stop(signal.SIGTERM)
        return import_submitit().helpers.DelayedSubmission(ClusterCommand(self.command))

    def __getstate__(self) -> dict:  # the running child stays out of the job's pickle
        return {"command": self.command, "_child": None}


def submit(command: list[str], nodes: int, gpus_per_node: int, hours: float, partition: str | None = None,
           signal_delay_s: int = 120, folder: str | None = None, tasks_per_node: int | None = None,
           cpus_per_task: int = 10, max_requeues: int = 20, local: bool = False):
    """Submit ``command`` (as run for one process); returns submitit's job. ``local``: submitit's local
    executor on this machine (one node, for trying a submission without Slurm)."""
    return submit_array([command], nodes, gpus_per_node, hours, partition, signal_delay_s, folder, tasks_per_node,
                        cpus_per_task, max_requeues, local)[0]


def submit_array(commands: list[list[str]], nodes: int, gpus_per_node: int, hours: float,
                 partition: str | None = None, signal_delay_s: int = 120, folder: str | None = None,
                 tasks_per_node: int | None = None, cpus_per_task: int = 10, max_requeues: int = 20,
                 local: bool = False) -> list:
    """Submit each of ``commands`` as a job of its own, all at once (a Slurm job array; the local executor runs them
    one after another); returns submitit's jobs. Logs go to ``folder`` (default: the first command's)."""
    commands = [prepare_command(command) for command in commands]
    if min(nodes, gpus_per_node, tasks_per_node or 1) < 1 or hours <= 0 or signal_delay_s < 0:
        raise InvalidInputError("--nodes, --gpus-per-node and --tasks-per-node must be >= 1, --time > 0 and "
                                "--signal-delay >= 0")
    folder = folder or default_folder(commands[0])
    if folder is None:
        raise InvalidInputError("the command sets no OUTPUT_DIR that the logs could go to; give --folder")
    submitit = import_submitit()
    params = slurm_parameters(nodes, gpus_per_node, hours, tasks_per_node, partition, signal_delay_s, cpus_per_task)
    if local:
        if nodes != 1:
            raise InvalidInputError("--local runs on this machine: --nodes must be 1")
        executor = submitit.LocalExecutor(folder, max_num_timeout=max_requeues)
        executor.update_parameters(timeout_min=params["time"], tasks_per_node=params["ntasks_per_node"],
                                   gpus_per_node=gpus_per_node, signal_delay_s=signal_delay_s)
    else:
        if shutil.which("srun") is None:
            raise InvalidInputError("no Slurm here (srun is not on PATH): submit from a Slurm login node, or use "
                                    "--local to try the job on this machine")
        executor = submitit.SlurmExecutor(folder, max_num_timeout=max_requeues)
        executor.update_parameters(**params)
    if len(commands) == 1:
        return [executor.submit(ClusterCommand(commands[0]))]
    with executor.batch():
        jobs = [executor.submit(ClusterCommand(command)) for command in commands]
    return jobs
