"""Export Mask R-CNN with a DN backbone for deployment, along detectron2's own path (TracingAdapter), and
check the file against the eager model on real images.

    python tools/export_d2.py --config-file configs/detection/mask_rcnn_demo.yaml --format torchscript \\
        -o output/deploy/demo MODEL.WEIGHTS output/detection/demo/model_final.pth

Writes OUTPUT/model.ts or OUTPUT/model.onnx, traced on the first image of the config's first test dataset;
both take an image of any height and width. Then, for --num-images images of that dataset (each at its own
size after the test resize) and the first one at two more sizes of other aspect ratios, each eager detection
is matched with the exported one of its class and box, whatever their order (scores that nearly tie may sort
either way), and the matched boxes, scores and masks (R-CNN outputs before the resize to the original image
size) must agree within --atol/--rtol; a detection of one output only passes when it lies at the score
threshold or the top-k cut. Each image's line gives the largest differences, the pairs in the other order and
the detections of one output only; anything else fails the command. Needs detectron2 (and onnxruntime for
--format onnx).
"""
import argparse
import sys

from ..errors import MissingDependencyError, cli_main


def main(argv=None) -> int:
    try:
        from .export_model import MODEL_FORMATS, export_and_check
    except ImportError as err:  # reported as the other commands report a user's mistake
        raise MissingDependencyError(str(err)) from None
    parser = argparse.ArgumentParser(prog="python -m dspnet_d2.d2.export_d2", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the detection config the model was trained with")
    parser.add_argument("--format", choices=list(MODEL_FORMATS), default="torchscript")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--num-images", type=int, default=4, help="test images the parity check runs on")
    parser.add_argument("--atol", type=float, default=1e-3)
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--demo-root", default="datasets/demo", help="the demo data (for the dspnet_demo datasets)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. MODEL.WEIGHTS model_final.pth")
    args = parser.parse_args(argv)
    return export_and_check(args.config_file, args.format, args.output, args.opts, args.num_images, args.atol,
                            args.rtol, args.demo_root)


if __name__ == "__main__":
    sys.exit(cli_main(main))
