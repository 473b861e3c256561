"""Mask R-CNN with a DN backbone as a deployable file, along detectron2's own path (its
``tools/deploy/export_model.py``): the model wrapped in ``detectron2.export.TracingAdapter``, traced to
TorchScript or exported to ONNX, and compared with the eager model on real images (needs detectron2)."""
from __future__ import annotations

import os

import torch

from . import require_detectron2

require_detectron2(__name__)

import detectron2.data.transforms as T  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import DatasetCatalog, detection_utils  # noqa: E402
from detectron2.export import TracingAdapter  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from ..deploy import require_deploy_extra  # noqa: E402
from ..errors import MissingFileError  # noqa: E402
from .train import load_config, register_demo  # noqa: E402

__all__ = ["load_eval_model", "model_input", "tracing_adapter", "export_model", "eager_fields", "load_exported",
           "size_variants", "exported_fields", "compare_fields", "export_and_check", "FIELDS"]

# detectron2's STABLE_ONNX_OPSET_VERSION is 11, whose RoiAlign has no half-pixel mode: ROIAlignV2 (aligned=True,
# every R-CNN head here) then exports as the old, shifted RoiAlign and the scores change. Opset 16 has it.
ONNX_OPSET = 16
FIELDS = ("pred_boxes", "scores", "pred_classes", "pred_masks")  # what the parity check compares


def load_eval_model(cfg) -> torch.nn.Module:
    """``build_model`` with ``MODEL.WEIGHTS`` loaded, in eval mode (SyncBN in eval is plain BN)."""
    model = build_model(cfg)
    DetectionCheckpointer(model).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
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


@torch.no_grad()
def export_model(model, image: torch.Tensor, fmt: str, output_dir: str) -> tuple[str, TracingAdapter]:
    """Trace ``model`` on ``image`` and write ``model.ts`` (TorchScript) or ``model.onnx`` (ONNX through the
    TorchScript-based exporter, the path detectron2 supports for R-CNN; torch.export cannot capture its
    data-dependent proposal counts). Both take an image (3, H, W) of any size. Returns (path, adapter)."""
    adapter = tracing_adapter(model, image)
    os.makedirs(output_dir, exist_ok=True)
    if fmt == "torchscript":
        path = os.path.join(output_dir, "model.ts")
        traced = torch.jit.trace(adapter, (image,), check_trace=False)
        traced.save(path)
    elif fmt == "onnx":
        path = os.path.join(output_dir, "model.onnx")
        # height and width free: test images differ in size after ResizeShortestEdge (the trace records the
        # shape arithmetic, so only the ONNX input's declared shape would pin one size)
        torch.onnx.export(adapter, (image,), path, opset_version=ONNX_OPSET, dynamo=False, input_names=["image"],
                          dynamic_axes={"image": {1: "height", 2: "width"}})
        model.eval()  # the exporter leaves the module in training mode
    else:
        raise ValueError(f"format must be torchscript or onnx, got {fmt!r}")
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


def load_exported(path: str, fmt: str):
    """The exported file as a function of the image to its flat outputs (loaded once, run per image)."""
    if fmt == "torchscript":
        return torch.jit.load(path)
    from ..deploy import onnx_session

    session = onnx_session(path)
    name = session.get_inputs()[0].name
    return lambda image: tuple(torch.from_numpy(a) for a in session.run(None, {name: image.numpy()}))


@torch.no_grad()
def exported_fields(run, adapter: TracingAdapter, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """``run``'s (``load_exported``) outputs for ``image``, rebuilt into Instances by the adapter's output schema."""
    return _fields(adapter.outputs_schema(run(image))[0]["instances"])


def compare_fields(expected: dict, got: dict, atol: float = 1e-3, rtol: float = 1e-3) -> dict[str, float]:
    """Max |difference| per field; raises AssertionError when a field's shape or values differ."""
    diffs = {}
    for name in FIELDS:
        a, b = expected[name], got[name]
        if a.shape != b.shape:
            raise AssertionError(f"{name}: exported shape {tuple(b.shape)} != eager {tuple(a.shape)}")
        if name == "pred_classes":
            if not torch.equal(a, b):
                raise AssertionError("pred_classes differ")
            diffs[name] = 0.0
            continue
        diffs[name] = (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
        torch.testing.assert_close(b.float(), a.float(), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")
    return diffs


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
    if fmt == "onnx":
        require_deploy_extra()
    if cfg.DATASETS.TEST[0].startswith("dspnet_demo_"):
        register_demo(demo_root)
    records = DatasetCatalog.get(cfg.DATASETS.TEST[0])[:max(num_images, 1)]
    model = load_eval_model(cfg)
    images = [model_input(cfg, r["file_name"]) for r in records]
    path, adapter = export_model(model, images[0], fmt, output_dir)
    run = load_exported(path, fmt)
    names = [os.path.basename(r["file_name"]) for r in records]
    checks = list(zip(names, images)) + [(f"{names[0]} resized", v) for v in size_variants(images[0])]
    for name, image in checks:
        expected = eager_fields(model, image)
        diffs = compare_fields(expected, exported_fields(run, adapter, image), atol, rtol)
        print(f"{name} ({image.shape[1]}x{image.shape[2]}): {len(expected['scores'])} detections, max |diff| "
              + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    sizes = sorted({tuple(image.shape[1:]) for _, image in checks})
    print(f"wrote {path}: equal to the eager model on {len(images)} images of {cfg.DATASETS.TEST[0]} at "
          f"{len(sizes)} sizes ({', '.join(f'{h}x{w}' for h, w in sizes)})")
    return 0
