"""Train / evaluate Mask R-CNN with a DSPNet DN backbone (detectron2's usual flags).

    python tools/train_net.py --config-file configs/detection/mask_rcnn_resnet_w1.0_d2222_FPN_2x_syncbn.yaml \\
        --num-gpus 8 MODEL.WEIGHTS resnet18.pkl
    python tools/train_net.py --config-file configs/detection/mask_rcnn_demo.yaml     # CPU demo
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth

The demo datasets (dspnet_demo_train / dspnet_demo_val) are registered from --demo-root and
generated there first if missing. Final COCO metrics are also written to OUTPUT_DIR/final_results.json.
The trainer is dspnet_d2.d2.train's, which the pipeline (python -m pretrain.pipeline) also runs.
"""
import sys

from ..errors import MissingDependencyError, cli_main


def main(argv=None) -> int:
    try:
        from .train import argument_parser, run
    except ImportError as err:  # reported as the other commands report a user's mistake
        raise MissingDependencyError(str(err)) from None
    run(argument_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
