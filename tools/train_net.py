#!/usr/bin/env python
"""Train / evaluate Mask R-CNN with a DSPNet DN backbone (detectron2's usual flags).

    python tools/train_net.py --config-file configs/detection/mask_rcnn_resnet_w1.0_d2222_FPN_2x_syncbn.yaml \\
        --num-gpus 8 MODEL.WEIGHTS resnet18.pkl
    python tools/train_net.py --config-file configs/detection/mask_rcnn_demo.yaml     # CPU demo
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth

The demo datasets (dspnet_demo_train / dspnet_demo_val) are registered from --demo-root and
generated there first if missing. Final COCO metrics are also written to OUTPUT_DIR/final_results.json.
"""
from __future__ import annotations

import json
import os
import sys
import weakref

try:
    from detectron2.config import get_cfg
    from detectron2.data.datasets import register_coco_instances
    from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, hooks, launch
    from detectron2.evaluation import COCOEvaluator
    from detectron2.utils import comm
except ImportError as err:  # reported as the other commands report a user's mistake
    print("error: tools/train_net.py needs detectron2, which is not on PyPI: install it from its official "
          f"source (https://detectron2.readthedocs.io/en/latest/tutorials/install.html). ({err})", file=sys.stderr)
    sys.exit(2)

from dspnet_d2 import add_dspnet_config
from dspnet_d2.d2.checkpoint import DSPNetCheckpointer
from dspnet_d2.errors import MissingFileError, cli_main


class Trainer(DefaultTrainer):
    """DefaultTrainer whose checkpointer can slice a DN out of a supernet .pkl."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.checkpointer = DSPNetCheckpointer(self.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        for hook in self._hooks:
            if isinstance(hook, hooks.PeriodicCheckpointer):
                hook.checkpointer = self.checkpointer

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))


def register_demo(root: str) -> None:
    from detectron2.data import DatasetCatalog
    from dspnet_d2.demo_data import make_demo_dataset

    if "dspnet_demo_train" in DatasetCatalog.list():
        return
    make_demo_dataset(root)  # returns at once when the data is already there
    for split in ("train", "val"):
        register_coco_instances(f"dspnet_demo_{split}", {}, os.path.join(root, "coco", "annotations",
                                f"instances_{split}.json"), os.path.join(root, "coco", split))


def setup(args):
    cfg = get_cfg()
    add_dspnet_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    register_demo(args.demo_root)
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DSPNetCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        results = Trainer.test(cfg, trainer.model)
    if comm.is_main_process():
        with open(os.path.join(cfg.OUTPUT_DIR, "final_results.json"), "w") as f:
            json.dump({"dn": cfg.MODEL.DSPNET.DN, "results": results}, f, indent=2)
    return results


def run(args) -> None:
    # checked before the workers start, each of which would fail on it with a traceback
    if not os.path.isfile(args.config_file):
        raise MissingFileError(f"config file {args.config_file!r} does not exist")
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    parser = default_argument_parser()
    parser.add_argument("--demo-root", default="datasets/demo", help="where the demo COCO data is (made if missing)")
    args = parser.parse_args()
    sys.exit(cli_main(lambda: run(args)))
