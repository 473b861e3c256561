"""Pictures of trained Mask R-CNN runs: detectron2's Visualizer on the same val images, one column per run
next to the ground truth (needs detectron2 and OpenCV, which detectron2's Visualizer imports)."""
from __future__ import annotations

import os

import torch

from . import require_detectron2

require_detectron2(__name__)

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.engine import DefaultPredictor  # noqa: E402

from ..errors import InvalidInputError, MissingFileError  # noqa: E402
from .train import load_config, register_demo  # noqa: E402

__all__ = ["load_predictor", "draw_runs", "draw_predictions"]


def load_predictor(run_dir: str, score_threshold: float) -> DefaultPredictor:
    """The final model of a tools/train_net.py run directory, in eval mode, on CUDA when present."""
    config, weights = os.path.join(run_dir, "config.yaml"), os.path.join(run_dir, "model_final.pth")
    for path in (config, weights):
        if not os.path.isfile(path):
            raise MissingFileError(f"{path} does not exist: is {run_dir} a finished tools/train_net.py run?")
    cfg = load_config(config, ["MODEL.WEIGHTS", weights, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(score_threshold),
                               "MODEL.DEVICE", "cuda" if torch.cuda.is_available() else "cpu"])
    return DefaultPredictor(cfg)  # SyncBN in eval mode is plain BN: one process is enough


def draw_runs(runs: dict[str, str], dataset: str, num_images: int, path: str, score_threshold: float = 0.5,
              scale: float = 2.0) -> list[str]:
    """One PNG at ``path``: a row per image (the first ``num_images`` of ``dataset``), the ground truth and
    then one column per ``{title: run_dir}``. Returns the images' file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from detectron2.utils.visualizer import Visualizer

    records = DatasetCatalog.get(dataset)[:num_images]
    metadata = MetadataCatalog.get(dataset)
    predictors = {title: load_predictor(run_dir, score_threshold) for title, run_dir in runs.items()}
    fig, axes = plt.subplots(len(records), 1 + len(runs), figsize=(3.2 * (1 + len(runs)), 3.2 * len(records)),
                             squeeze=False)
    for index, (row, record) in enumerate(zip(axes, records)):
        image = read_image(record["file_name"], format="BGR")  # DefaultPredictor's input convention
        rgb = image[:, :, ::-1]
        panels = {"ground truth": Visualizer(rgb, metadata, scale=scale).draw_dataset_dict(record)}
        for title, predictor in predictors.items():
            instances = predictor(image)["instances"].to("cpu")
            panels[title] = Visualizer(rgb, metadata, scale=scale).draw_instance_predictions(instances)
        for ax, (title, drawn) in zip(row, panels.items()):
            ax.imshow(drawn.get_image())
            ax.set_title(title if index == 0 else "", fontsize=10)
            ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path + ".tmp.png", dpi=100)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)
    return [os.path.basename(r["file_name"]) for r in records]


def draw_predictions(runs: list[str], dataset: str, num_images: int, output: str, score_threshold: float = 0.5,
                     demo_root: str = "datasets/demo") -> int:
    """``draw_runs`` of ``runs`` (``TITLE=run_dir``, or a run directory as its own title) on a registered
    dataset (the demo datasets registered from ``demo_root``), with a printed line (tools/draw_predictions.py)."""
    runs = dict(arg.split("=", 1) if "=" in arg else (arg, arg) for arg in runs)
    if num_images < 1:
        raise InvalidInputError(f"-n must be at least 1, got {num_images}")
    if dataset.startswith("dspnet_demo_"):
        register_demo(demo_root)
    if dataset not in DatasetCatalog.list():
        raise InvalidInputError(f"dataset {dataset!r} is not registered in detectron2")
    names = draw_runs(runs, dataset, num_images, output, score_threshold)
    print(f"wrote {output}: {len(names)} images of {dataset} x (ground truth, {', '.join(runs)})")
    return 0
