"""Export Mask R-CNN with a DN backbone as a deployable file, along detectron2's own path (its
``tools/deploy/export_model.py``): the model wrapped in ``detectron2.export.TracingAdapter``, written as a format
of ``MODEL_FORMATS`` (TorchScript, traced; ONNX), and check the file against the eager model on real images
(needs detectron2)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import torch
from torchvision.ops import box_iou

from . import require_detectron2

require_detectron2(__name__)

import detectron2.data.transforms as T  # noqa: E402
from detectron2.data import DatasetCatalog, detection_utils  # noqa: E402
from detectron2.export import TracingAdapter  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from ..deploy.formats import ParityError, get_format, onnx_outputs, onnx_session, require_deploy_extra  # noqa: E402
from ..errors import MissingFileError  # noqa: E402
from .checkpoint import DSPNetCheckpointer  # noqa: E402
from .train import load_config, register_demo  # noqa: E402

__all__ = ["ModelFormat", "MODEL_FORMATS", "load_eval_model", "model_input", "tracing_adapter", "export_model",
           "eager_fields", "size_variants", "exported_fields", "match_detections", "compare_detections", "Parity",
           "export_and_check", "FIELDS"]

# detectron2's STABLE_ONNX_OPSET_VERSION is 11, whose RoiAlign has no half-pixel mode: ROIAlignV2 (aligned=True,
# every R-CNN head here) then exports as the old, shifted RoiAlign and the scores change. Opset 16 has it.
ONNX_OPSET = 16
FIELDS = ("pred_boxes", "scores", "pred_classes", "pred_masks")  # what the parity check compares
# the least box IoU of an eager and an exported detection taken as the same one: the R-CNN's NMS (0.5 by default)
# leaves no two detections of a class overlapping more, so no other detection can take a detection's place
MATCH_IOU = 0.5


def load_eval_model(cfg) -> torch.nn.Module:
    """``build_model`` with ``MODEL.WEIGHTS`` loaded, in eval mode (SyncBN in eval is plain BN)."""
    model = build_model(cfg)
    DSPNetCheckpointer(model).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    return model.eval()


def model_input(cfg, path: str) -> torch.Tensor:
    """An image file as the model's input tensor (C, H, W), resized as the test loader resizes it."""
    image = detection_utils.read_image(path, format=cfg.INPUT.FORMAT)
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
    image = resize.get_transform(image).apply_image(image)
    return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))


def _inference(model, inputs):
    # detectron2's export_model: R-CNN outputs before the final resize to the original image size
    return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]


def tracing_adapter(model, image: torch.Tensor) -> TracingAdapter:
    return TracingAdapter(model, [{"image": image}], _inference)


@dataclass(frozen=True)
class ModelFormat:
    """A file Mask R-CNN is written to: both take an image (3, H, W) of any size; loaded, a function of the image
    to the adapter's flat outputs."""

    name: str  # the --format value
    file: str  # its name in the output folder
    export: Callable[[TracingAdapter, torch.Tensor, str], None]  # (adapter, the image traced, path)
    load: Callable[[str], Callable]
    requires: Callable[[], None] = lambda: None  # raises the user's error when what it needs is not installed


def _trace(adapter: TracingAdapter, image: torch.Tensor, path: str) -> None:
    torch.jit.trace(adapter, (image,), check_trace=False).save(path)


def _onnx(adapter: TracingAdapter, image: torch.Tensor, path: str) -> None:
    # the TorchScript-based exporter, the path detectron2 supports for R-CNN: torch.export cannot capture its
    # data-dependent proposal counts. Height and width free: test images differ in size after
    # ResizeShortestEdge (the trace records the shape arithmetic, so only the input's declared shape would pin one)
    torch.onnx.export(adapter, (image,), path, opset_version=ONNX_OPSET, dynamo=False, input_names=["image"],
                      dynamic_axes={"image": {1: "height", 2: "width"}})


def _load_onnx(path: str) -> Callable:
    session = onnx_session(path)  # loaded once, run per image
    return lambda image: onnx_outputs(session, image)


# detectron2's formats (the DN formats' torch.export and dynamo exporter cannot capture an R-CNN): the runtimes
# and the TorchScript loader are the DN table's
MODEL_FORMATS = {fmt.name: fmt for fmt in (
    ModelFormat("torchscript", "model.ts", _trace, get_format("torchscript").load),
    ModelFormat("onnx", "model.onnx", _onnx, _load_onnx, requires=require_deploy_extra),
)}


@torch.no_grad()
def export_model(model, image: torch.Tensor, fmt: str, output_dir: str) -> tuple[str, TracingAdapter]:
    """Trace ``model`` on ``image`` and write it as ``MODEL_FORMATS[fmt]`` into ``output_dir``. Returns (path,
    adapter)."""
    if fmt not in MODEL_FORMATS:
        raise ValueError(f"format must be one of {', '.join(MODEL_FORMATS)}, got {fmt!r}")
    adapter = tracing_adapter(model, image)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, MODEL_FORMATS[fmt].file)
    MODEL_FORMATS[fmt].export(adapter, image, path)
    model.eval()  # the ONNX exporter leaves the module in training mode
    return path, adapter


def size_variants(image: torch.Tensor) -> list[torch.Tensor]:
    """``image`` resized to two other sizes of other aspect ratios (wider, then taller; neither a multiple of
    the backbone's stride): what a file that serves one traced size would fail on."""
    _, h, w = image.shape
    sizes = [(h * 3 // 4 + 1, w * 5 // 4 + 3), (h * 5 // 4 + 3, w * 3 // 4 + 1)]
    return [torch.nn.functional.interpolate(image[None], size=s, mode="bilinear", align_corners=False)[0]
            for s in sizes]


def _fields(instances) -> dict[str, torch.Tensor]:
    fields = instances.get_fields()
    return {name: (fields[name].tensor if name == "pred_boxes" else fields[name]).detach().cpu() for name in FIELDS}


@torch.no_grad()
def eager_fields(model, image: torch.Tensor) -> dict[str, torch.Tensor]:
    return _fields(_inference(model, [{"image": image}])[0]["instances"])


@torch.no_grad()
def exported_fields(run, adapter: TracingAdapter, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """``run``'s (a ``ModelFormat``'s load) outputs for ``image``, rebuilt into Instances by the adapter's output
    schema."""
    return _fields(adapter.outputs_schema(run(image))[0]["instances"])


def match_detections(expected: dict, got: dict, min_iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """(eager index, exported index) of each detection found in both outputs, in eager order: the pairs of the
    same class, highest box IoU first (at least ``min_iou``), each detection in one pair at most. Detections
    whose scores nearly tie may come out of the two runtimes' sorts and NMS in either order; matching by box
    compares each detection with itself."""
    if not len(expected["scores"]) or not len(got["scores"]):
        return []
    iou = box_iou(expected["pred_boxes"].float(), got["pred_boxes"].float())
    iou[expected["pred_classes"][:, None] != got["pred_classes"][None, :]] = -1.0
    pairs, taken_eager, taken_exported = [], set(), set()
    for k in iou.flatten().argsort(descending=True, stable=True).tolist():
        i, j = divmod(k, iou.shape[1])
        if iou[i, j] < min_iou:
            break
        if i not in taken_eager and j not in taken_exported:
            pairs.append((i, j))
            taken_eager.add(i)
            taken_exported.add(j)
    return sorted(pairs)


@dataclass
class Parity:
    """What ``compare_detections`` found: the largest differences over matched detections, their order, and the
    detections of one output only (each with where it lies)."""

    diffs: dict[str, float]  # field -> max |eager - exported| over the matched detections
    matched: int
    swaps: int = 0  # pairs of matched detections in the other order
    swap_gap: float = 0.0  # the largest eager score gap of a swapped pair
    near_tie: bool = True  # every swapped pair's scores within the scores' tolerance
    one_sided: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"{self.matched} matched, max |diff| " + ", ".join(f"{k} {v:.1e}" for k, v in self.diffs.items())
        if self.swaps:
            tie = "a near-tie of scores" if self.near_tie else "scores"
            text += f"; {self.swaps} pair(s) in the other order ({tie} {self.swap_gap:.1e} apart)"
        return text + "".join(f"; {line}" for line in self.one_sided)


def _swaps(pairs: list[tuple[int, int]], scores: torch.Tensor) -> tuple[int, float]:
    crossed = [(a, b) for a in pairs for b in pairs if a[0] < b[0] and a[1] > b[1]]
    return len(crossed), max((abs(scores[a[0]] - scores[b[0]]).item() for a, b in crossed), default=0.0)


def _one_sided(fields: dict, other: dict, index: int, side: str, score_thresh: float, top_k: int,
               margin: float) -> tuple[str, bool]:
    """A detection of one output only, in words, and whether it lies at a cut the other output may fall on the
    other side of by rounding: the score threshold, or the top-k cut of a full other output (tied with the
    lowest score it kept)."""
    score = fields["scores"][index].item()
    where = f"{side} only: class {fields['pred_classes'][index].item()}, score {score:.4f}"
    if score - score_thresh <= margin:
        return f"{where}, at the score threshold {score_thresh:g}", True
    if len(other["scores"]) >= top_k and abs(score - other["scores"].min().item()) <= margin:
        return f"{where}, at the top-{top_k} cut", True
    return where, False


def compare_detections(expected: dict, got: dict, atol: float = 1e-3, rtol: float = 1e-3, score_thresh: float = 0.05,
                       top_k: int = 100) -> Parity:
    """Match the eager model's detections (``expected``) with the exported file's (``got``) by class and box,
    whatever their order, and compare the matched boxes, scores and masks within ``atol`` + ``rtol`` * |eager|.
    A detection of one output only passes when it lies at the score threshold or the top-k cut within the
    tolerance. Raises ParityError saying what differs; returns the ``Parity``."""
    pairs = match_detections(expected, got)
    eager, exported = (torch.tensor([p[k] for p in pairs], dtype=torch.long) for k in (0, 1))
    diffs, failures = {}, []
    for name in ("pred_boxes", "scores", "pred_masks"):
        a, b = expected[name][eager].float(), got[name][exported].float()
        diff = (a - b).abs()
        diffs[name] = diff.max().item() if diff.numel() else 0.0
        if (diff > atol + rtol * a.abs()).any():
            failures.append(f"{name} of matched detections differ by up to {diffs[name]:.1e}")
    swaps, gap = _swaps(pairs, expected["scores"])
    parity = Parity(diffs, len(pairs), swaps, gap, near_tie=gap <= atol + rtol)  # scores are at most 1
    margin = atol + rtol * score_thresh
    for fields, other, side, taken in ((expected, got, "eager", eager), (got, expected, "exported", exported)):
        for index in sorted(set(range(len(fields["scores"]))) - set(taken.tolist())):
            line, at_cut = _one_sided(fields, other, index, side, score_thresh, top_k, margin)
            parity.one_sided.append(line)
            if not at_cut:
                failures.append(line)
    if failures:
        raise ParityError("; ".join(failures) + f" ({parity.describe()})")
    return parity


def export_and_check(config_file: str, fmt: str, output_dir: str, opts=(), num_images: int = 4, atol: float = 1e-3,
                     rtol: float = 1e-3, demo_root: str = "datasets/demo") -> int:
    """Export the model of ``config_file`` + ``opts`` (``MODEL.WEIGHTS`` the trained one) as ``fmt`` into
    ``output_dir``, traced on the first image of the config's first test dataset, and compare it with the
    eager model on ``num_images`` of its images and on the first at two more sizes (tools/export_d2.py);
    prints a line per image and one for the file."""
    if not os.path.isfile(config_file):
        raise MissingFileError(f"config file {config_file!r} does not exist")
    cfg = load_config(config_file, list(opts) + ["MODEL.DEVICE", "cpu"])
    if not cfg.MODEL.WEIGHTS or not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise MissingFileError(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r}: give the trained model_final.pth")
    form = MODEL_FORMATS[fmt]
    form.requires()
    if cfg.DATASETS.TEST[0].startswith("dspnet_demo_"):
        register_demo(demo_root)
    records = DatasetCatalog.get(cfg.DATASETS.TEST[0])[:max(num_images, 1)]
    model = load_eval_model(cfg)
    images = [model_input(cfg, r["file_name"]) for r in records]
    path, adapter = export_model(model, images[0], fmt, output_dir)
    run = form.load(path)
    names = [os.path.basename(r["file_name"]) for r in records]
    checks = list(zip(names, images)) + [(f"{names[0]} resized", v) for v in size_variants(images[0])]
    cuts = {"score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, "top_k": cfg.TEST.DETECTIONS_PER_IMAGE}
    for name, image in checks:
        expected = eager_fields(model, image)
        try:
            parity = compare_detections(expected, exported_fields(run, adapter, image), atol, rtol, **cuts)
        except ParityError as err:
            raise ParityError(f"{name} ({image.shape[1]}x{image.shape[2]}): {err}") from None
        print(f"{name} ({image.shape[1]}x{image.shape[2]}): {len(expected['scores'])} detections, {parity.describe()}")
    sizes = sorted({tuple(image.shape[1:]) for _, image in checks})
    print(f"wrote {path}: equal to the eager model on {len(images)} images of {cfg.DATASETS.TEST[0]} at "
          f"{len(sizes)} sizes ({', '.join(f'{h}x{w}' for h, w in sizes)})")
    return 0
