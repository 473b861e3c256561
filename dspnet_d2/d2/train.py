"""Mask R-CNN training and evaluation with a DN backbone: the trainer, the demo datasets and the command's
``main``, shared by ``tools/train_net.py`` and the pipeline (needs detectron2)."""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import sys
import weakref
from pathlib import Path

import numpy as np
import torch

from . import require_detectron2

require_detectron2(__name__)

from detectron2.config import get_cfg  # noqa: E402
from detectron2.data.datasets import register_coco_instances  # noqa: E402
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, hooks, launch  # noqa: E402
from detectron2.engine.defaults import create_ddp_model  # noqa: E402
from detectron2.engine.launch import DEFAULT_TIMEOUT  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from ..errors import EXIT_PREEMPTED, InvalidInputError, MissingFileError, Preempted  # noqa: E402
from ..runtime.rendezvous import init_process_group  # noqa: E402
from ..runtime.seeding import derive_seed, rng_state, set_rng_state  # noqa: E402
from ..runtime.stopping import DEFAULT_STOP_SIGNALS, ForwardSignals, StopProtocol  # noqa: E402
from ..runtime.workers import ShieldedLoader  # noqa: E402
from .checkpoint import DSPNetCheckpointer  # noqa: E402
from .config import add_dspnet_config  # noqa: E402
from .data import build_resumable_train_loader  # noqa: E402

__all__ = ["Trainer", "register_demo", "load_config", "setup", "main", "argument_parser", "run"]

DEMO_DATASETS = ("dspnet_demo_train", "dspnet_demo_val")


class Trainer(DefaultTrainer):
    """DefaultTrainer whose checkpointer can slice a DN out of a supernet .pkl, whose batches resume exactly at
    any iteration (``build_resumable_train_loader``; the checkpoints keep every generator, the GPUs' that sample
    proposals included), whose loaders' workers outlive a stop signal, and which stops on a signal with the
    checkpoint of that iteration (``StopHook``), skipping an evaluation the stop came before."""

    def __init__(self, cfg, stops: StopProtocol | None = None):
        self.stops = stops  # before DefaultTrainer's __init__, which builds the hooks
        with _ddp_on_any_device():
            super().__init__(cfg)
        self.checkpointer = DSPNetCheckpointer(self.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        for hook in self._hooks:
            if isinstance(hook, hooks.PeriodicCheckpointer):
                hook.checkpointer = self.checkpointer
        if stops is not None:
            self.register_hooks([StopHook(stops)])

    def build_hooks(self):
        found = super().build_hooks()
        if self.stops is None:
            return found
        return [StoppableEvalHook(hook._period, hook._func, self.stops) if isinstance(hook, hooks.EvalHook) else hook
                for hook in found]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))

    @classmethod
    def build_train_loader(cls, cfg):
        return build_resumable_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """detectron2's test loader, its workers shielded: a stop signal during an evaluation waits for its end."""
        loader = super().build_test_loader(cfg, dataset_name)
        return ShieldedLoader(loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler,
                              num_workers=loader.num_workers, collate_fn=loader.collate_fn)

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        self._trainer.data_loader.batch_sampler.start_iter = self.start_iter

    def state_dict(self):
        return {**super().state_dict(), "rng": rng_state()}

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if isinstance(state_dict.get("rng"), dict):
            set_rng_state(state_dict["rng"])


def ddp_model(model, **kwargs):
    """detectron2's ``create_ddp_model``, which gives DDP ``device_ids=[local rank]``, refused by DDP for a model on
    the CPU: a CPU model gets none, so several processes train on CPU (gloo) too."""
    if next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return create_ddp_model(model, **kwargs)


@contextlib.contextmanager
def _ddp_on_any_device():
    """``ddp_model`` in place of detectron2's ``create_ddp_model`` inside the block (``DefaultTrainer`` calls it)."""
    from detectron2.engine import defaults

    defaults.create_ddp_model = ddp_model
    try:
        yield
    finally:
        defaults.create_ddp_model = create_ddp_model


class TrainingStopped(BaseException):
    """Ends detectron2's loop from a hook: not an ``Exception``, which the loop would log with a traceback."""

    def __init__(self, preempted: Preempted):
        super().__init__(str(preempted))
        self.preempted = preempted


class StopHook(hooks.HookBase):
    """After each iteration (and after its evaluation): when a stop signal reached any rank, the checkpoint of this
    iteration (``--resume`` continues with the next one), ``stopped.json`` and ``TrainingStopped``."""

    def __init__(self, stops: StopProtocol):
        self.stops = stops

    def after_step(self):
        iteration = self.trainer.iter

        def save() -> None:
            self.trainer.checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
            comm.synchronize()

        try:
            self.stops.check(iteration + 1, save, where=f"iteration {iteration + 1} of {self.trainer.max_iter}")
        except Preempted as stopped:
            raise TrainingStopped(stopped) from None


class StoppableEvalHook(hooks.EvalHook):
    """detectron2's EvalHook that skips an evaluation once a stop signal reached any rank: the checkpoint is written
    first, and the final evaluation is left to the rerun (``--resume`` evaluates a finished run)."""

    def __init__(self, eval_period, eval_function, stops: StopProtocol):
        super().__init__(eval_period, eval_function)
        self.stops = stops

    def _do_eval(self):
        if self.stops.agreed():
            return
        super()._do_eval()


def register_demo(root: str) -> None:
    """Register the demo COCO data under ``root`` (generated there first if missing) as
    dspnet_demo_train / dspnet_demo_val."""
    from detectron2.data import DatasetCatalog

    from ..demo.make_demo_data import make_demo_dataset

    if DEMO_DATASETS[0] in DatasetCatalog.list():
        return
    marker = os.path.join(root, "DEMO_DATA.json")
    if not (os.path.exists(marker) and json.loads(Path(marker).read_text()).get("complete")):
        make_demo_dataset(root)  # a complete demo dataset of any size is used as it is
    for name in DEMO_DATASETS:
        split = name.rsplit("_", 1)[1]
        register_coco_instances(name, {}, os.path.join(root, "coco", "annotations", f"instances_{split}.json"),
                                os.path.join(root, "coco", split))


def load_config(config_file: str, opts=()):
    """detectron2's config with the MODEL.DSPNET node, merged with a file and ``KEY VALUE`` overrides."""
    cfg = get_cfg()
    add_dspnet_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    with any_seed():
        default_setup(cfg, args)
    return cfg


@contextlib.contextmanager
def any_seed():
    """detectron2's ``default_setup`` seeds NumPy with ``SEED + rank``, which NumPy refuses past 2**32 - 1: inside
    the block it seeds every generator from a seed derived from that one instead, so any 63-bit ``SEED`` works
    (``-1`` stays detectron2's random seed)."""
    from detectron2.engine import defaults

    original = defaults.seed_all_rng

    def seed_all(seed=None):
        if seed is None or 0 <= seed < 2 ** 32:
            return original(seed)  # what detectron2 does, where it can
        random.seed(seed)
        np.random.seed(derive_seed(seed) % 2 ** 32)
        torch.manual_seed(derive_seed(seed))  # every device's generator too
        os.environ["PYTHONHASHSEED"] = str(seed)

    defaults.seed_all_rng = seed_all
    try:
        yield
    finally:
        defaults.seed_all_rng = original


def main(args) -> dict:
    """Train (resuming with ``--resume``) or evaluate, then write OUTPUT_DIR/final_results.json."""
    cfg = setup(args)
    if any(name in DEMO_DATASETS for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST):
        register_demo(args.demo_root)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DSPNetCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
    else:
        device = torch.device("cuda", torch.cuda.current_device()) if cfg.MODEL.DEVICE.startswith("cuda") else "cpu"
        with StopProtocol(cfg.OUTPUT_DIR, DEFAULT_STOP_SIGNALS, comm.get_world_size(), device,
                          comm.is_main_process()) as stops:
            trainer = Trainer(cfg, stops)
            trainer.resume_or_load(resume=args.resume)
            try:
                trainer.train()
            except TrainingStopped as stopped:
                raise stopped.preempted from None
        # the EvalHook evaluated the final model already (DefaultTrainer keeps its results there; on ranks other
        # than the first they are empty, and every rank must take the same branch: the evaluation synchronises)
        evaluated = hasattr(trainer, "_last_eval_results")
        results = trainer._last_eval_results if evaluated else Trainer.test(cfg, trainer.model)
    if comm.is_main_process():
        path = os.path.join(cfg.OUTPUT_DIR, "final_results.json")
        with open(path + ".tmp", "w") as f:  # written last and whole: a finished run's marker
            json.dump({"dn": cfg.MODEL.DSPNET.DN, "results": results}, f, indent=2)
        os.replace(path + ".tmp", path)
    return results


EPILOG = """Examples:

  one machine, 8 GPUs:
    python tools/train_net.py --config-file configs/detection/mask_rcnn_mbv3_w0.5_FPN_2x_syncbn.yaml --num-gpus 8 \\
        MODEL.WEIGHTS mbv3_w0.5.pkl
  one process per GPU started by torchrun (or by tools/submit.py's Slurm tasks): no --num-gpus
    torchrun --nproc_per_node 8 -m dspnet_d2.d2.train_net --config-file configs/detection/mask_rcnn_demo.yaml --resume
  two machines without a launcher, on each (R = 0, 1):
    python tools/train_net.py --config-file configs/detection/mask_rcnn_demo.yaml --num-gpus 8 --num-machines 2 \\
        --machine-rank R --dist-url tcp://HEAD:29500 --resume
  the CPU demo:
    python tools/train_net.py --config-file configs/detection/mask_rcnn_demo.yaml

--resume continues from OUTPUT_DIR's last checkpoint, and on a first run loads MODEL.WEIGHTS: give it to every
job that may be requeued. A stop signal writes the checkpoint of its iteration and exits 75 (docs/CLUSTER.md).
"""


def argument_parser():
    parser = default_argument_parser(epilog=EPILOG)
    parser.add_argument("--demo-root", default="datasets/demo", help="where the demo COCO data is (made if missing)")
    return parser


def run(args) -> None:
    """``main`` in this process, in each process a launcher started (torchrun, ``tools/submit.py``: the process
    group from the environment they set), or on ``--num-gpus`` processes per machine (detectron2's launch)."""
    # checked before the workers start, each of which would fail on it with a traceback
    if not os.path.isfile(args.config_file):
        raise MissingFileError(f"config file {args.config_file!r} does not exist")
    if launched_per_process():
        if args.num_gpus * args.num_machines != 1:
            raise InvalidInputError(
                f"this process is one of {os.environ['WORLD_SIZE']} that a launcher (torchrun, srun, "
                "tools/submit.py) started, one per GPU: drop --num-gpus and --num-machines")
        join_process_group()
        try:
            main(args)
        finally:
            torch.distributed.destroy_process_group()
        return
    if args.num_gpus * args.num_machines == 1:
        main(args)  # here: a stop signal's Preempted reaches the command's exit status 75
        return
    from torch.multiprocessing import ProcessExitedException

    # this process only waits for the ranks it spawned: a stop signal is passed on to them, and their
    # status 75 (each wrote the checkpoint of the iteration they stopped at) becomes this command's
    ranks = lambda: [child.pid for child in multiprocessing.active_children()]  # noqa: E731
    with ForwardSignals(DEFAULT_STOP_SIGNALS, ranks) as forwarded:
        try:
            launch(_rank_main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                   dist_url=args.dist_url, args=(args,))
        except ProcessExitedException as err:
            if err.exit_code != EXIT_PREEMPTED:
                raise
            raise Preempted(forwarded.signalled or "a signal", -1, load_config(args.config_file, args.opts).OUTPUT_DIR,
                            where="the iteration each rank had reached") from None


def launched_per_process() -> bool:
    """Whether a launcher started this process as one rank of several (torchrun, ``tools/submit.py``'s tasks)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def join_process_group() -> None:
    """What detectron2's ``launch`` does in each rank it spawns, from torchrun's environment: the process group
    (NCCL on GPUs, gloo otherwise; under torchrun's shared store, keys of this round only), detectron2's local
    group of this machine's ranks, and this rank's GPU."""
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local_rank, local_world = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank, world, DEFAULT_TIMEOUT)
    comm.create_local_process_group(local_world)
    comm.synchronize()


def _rank_main(args) -> None:
    """``main`` in a spawned rank: a stop ends it with status 75 and one line, not a traceback for the launcher."""
    try:
        main(args)
    except Preempted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
