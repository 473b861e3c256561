"""Draw Mask R-CNN predictions of finished runs side by side (detectron2's Visualizer), as one PNG.

    python tools/draw_predictions.py random=output/detection/random_mbv3_w0.5 \\
        DSPNet=output/detection/dspnet_mbv3_w0.5 --dataset dspnet_demo_val -n 4 -o mbv3_w0.5.png

A row per val image (the dataset's first N), the ground truth and then a column per run (tools/train_net.py
OUTPUT_DIRs with config.yaml and model_final.pth). Needs detectron2 and OpenCV.
"""
import argparse
import sys

from ..errors import MissingDependencyError, cli_main


def main(argv=None) -> int:
    try:
        from .visualize import draw_predictions
    except ImportError as err:  # reported as the other commands report a user's mistake
        raise MissingDependencyError(f"{err} (the pictures also need OpenCV: pip install opencv-python-headless)")
    parser = argparse.ArgumentParser(prog="python -m dspnet_d2.d2.draw_predictions", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="TITLE=run directory")
    parser.add_argument("--dataset", default="dspnet_demo_val", help="a registered detectron2 dataset")
    parser.add_argument("--demo-root", default="datasets/demo", help="the demo data (registered when the dataset is)")
    parser.add_argument("-n", "--num-images", type=int, default=4)
    parser.add_argument("--score-threshold", type=float, default=0.5, help="predictions below it are not drawn")
    parser.add_argument("-o", "--output", required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    return draw_predictions(args.runs, args.dataset, args.num_images, args.output, args.score_threshold,
                            args.demo_root)


if __name__ == "__main__":
    sys.exit(cli_main(main))
