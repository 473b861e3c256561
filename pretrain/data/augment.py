"""BYOL's two views of one image, fast: parameters drawn first, the JPEG decoded at the size the crops
need, the colour operations run on uint8 arrays in OpenCV, and uint8 tensors out (normalised on the device).

The random parameters are drawn with torch's global RNG in exactly the order torchvision's ``Compose`` of
``byol_transforms`` draws them (view 1 then view 2; crop, flip, jitter, greyscale, blur, solarize), from
the image size alone (a JPEG's header). So for one seed both backends see the same crops, factors and
sigmas:

- ``"torchvision"``: torchvision's own functionals on PIL images; equal, pixel for pixel, to
  ``byol_transforms`` (the reference; tested).
- ``"opencv"`` (default): JPEG draft decoding (DCT scaling by 1/2, 1/4, 1/8 while both crops keep at least
  the output resolution, so nothing is upsampled that was not before), crop and bicubic resize in one PIL
  call, then colour jitter, greyscale, blur and solarize in OpenCV: hue 4x and blur 8x faster than PIL's
  at 224 px. Brightness, contrast and saturation equal torchvision's (PIL's truncation included); hue is
  the exact rotation (PIL's 8-bit hue is about one grey level off it) and the blur the exact Gaussian
  (to 4 sigma) where PIL approximates it with box blurs: about one grey level from the reference on
  average (tested).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T
from torchvision.transforms import functional as F

__all__ = ["ViewParams", "DecodedImage", "BYOLViews", "normalize_views", "AUGMENT_BACKENDS"]

AUGMENT_BACKENDS = ("opencv", "torchvision")
_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


@dataclass
class ViewParams:
    """What one view does to the image: crop box ``(top, left, height, width)`` in the original's pixels,
    flip, jitter (``None`` or (order, brightness, contrast, saturation, hue)), greyscale, blur sigma, solarize."""
    crop: tuple[int, int, int, int]
    flip: bool
    jitter: tuple | None
    grayscale: bool
    blur_sigma: float | None
    solarize: bool


@dataclass
class DecodedImage:
    """An image decoded for its two views: RGB pixels, both views' parameters and the decoding scale."""
    image: Image.Image
    params: list[ViewParams]
    scale: tuple[float, float]


class BYOLViews:
    """``views(image_file) -> (view1, view2)`` as uint8 ``(3, resolution, resolution)`` tensors (CHW views of
    HWC memory, as ``pil_to_tensor`` gives them: ``collate_views`` stacks them without transposing).

    ``image_file`` is an opened, not yet decoded PIL image (``Image.open``): decoding happens here, after
    the crops are known. Probabilities and strengths are the keys of ``byol_transforms``.
    """

    def __init__(self, resolution: int, crop_scale=(0.08, 1.0), blur_prob=(1.0, 0.1), solarize_prob=(0.0, 0.2),
                 color_jitter=(0.4, 0.4, 0.2, 0.1), color_jitter_prob: float = 0.8, grayscale_prob: float = 0.2,
                 blur_sigma=(0.1, 2.0), backend: str = "opencv", draft: bool | None = None):
        if backend not in AUGMENT_BACKENDS:
            raise ValueError(f"unknown augmentation backend {backend!r}; choose one of {AUGMENT_BACKENDS}")
        self.resolution, self.crop_scale = resolution, tuple(crop_scale)
        self.blur_prob, self.solarize_prob = tuple(blur_prob), tuple(solarize_prob)
        self.jitter = T.ColorJitter(*color_jitter)  # only its ranges: get_params draws as ColorJitter does
        self.color_jitter_prob, self.grayscale_prob, self.blur_sigma = color_jitter_prob, grayscale_prob, tuple(blur_sigma)
        self.backend = backend
        self.draft = backend == "opencv" if draft is None else draft

    # -- the draws -------------------------------------------------------------------------------
    def draw(self, image_file: Image.Image, view: int) -> ViewParams:
        """One view's parameters (``view`` 0 or 1), torchvision's draws in its order; reads only the size."""
        crop = T.RandomResizedCrop.get_params(image_file, list(self.crop_scale), list(_CROP_RATIO))
        flip = bool(torch.rand(1) < 0.5)
        jitter = None
        if not self.color_jitter_prob < torch.rand(1):  # RandomApply's test
            j = self.jitter
            order, *factors = T.ColorJitter.get_params(j.brightness, j.contrast, j.saturation, j.hue)
            jitter = (order.tolist(), *factors)
        grayscale = bool(torch.rand(1) < self.grayscale_prob)
        sigma = None
        if not self.blur_prob[view] < torch.rand(1):
            sigma = torch.empty(1).uniform_(*self.blur_sigma).item()
        solarize = torch.rand(1).item() < self.solarize_prob[view]
        return ViewParams(tuple(int(v) for v in crop), flip, jitter, grayscale, sigma, solarize)

    def __call__(self, image_file: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(self.decode(image_file))

    # -- decoding ------------------------------------------------------------------------------------
    def decode(self, image_file: Image.Image) -> "DecodedImage":
        """Both views' parameters (drawn from the header's size), then the image decoded at the size they
        need: the step that reads the file (``ImageFolderIO.load_with`` skips a file whose decoding fails)."""
        params = [self.draw(image_file, view) for view in (0, 1)]
        scale = self.load_draft(image_file, params)
        return DecodedImage(image_file.convert("RGB"), params, scale)

    def augment(self, decoded: "DecodedImage") -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(self.apply(decoded.image, p, decoded.scale) for p in decoded.params)

    def load_draft(self, image_file: Image.Image, params: list[ViewParams]) -> tuple[float, float]:
        """Decode (JPEG: at the smallest DCT scale that keeps every crop >= the output size); returns the
        factor from the original's pixel coordinates to the decoded image's, per axis."""
        width, height = image_file.size
        scale = (1.0, 1.0)
        if self.draft and image_file.format == "JPEG":
            needed = max(self.resolution / min(p.crop[2], p.crop[3]) for p in params)  # per-axis scale needed
            if needed < 1:
                drafted = image_file.draft("RGB", (math.ceil(width * needed), math.ceil(height * needed)))
                if drafted is not None:
                    # draft's box is the original in decoded units: exactly 1/s for a DCT scale s. The decoded
                    # size, ceil(W / s), would shift every crop toward the right and bottom edges.
                    box = drafted[1]
                    scale = (box[2] / width, box[3] / height)
        image_file.load()  # a truncated file raises here
        return scale

    # -- one view ---------------------------------------------------------------------------------
    def apply(self, image: Image.Image, p: ViewParams, scale=(1.0, 1.0)) -> torch.Tensor:
        if self.backend == "torchvision":
            return F.pil_to_tensor(_apply_torchvision(image, p, self.resolution))
        top, left, h, w = p.crop
        sx, sy = scale
        box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
        view = image.resize((self.resolution, self.resolution), Image.BICUBIC, box=box)
        if p.flip:
            view = view.transpose(Image.FLIP_LEFT_RIGHT)
        return torch.from_numpy(_colour_opencv(np.array(view), p)).permute(2, 0, 1)  # HWC memory: see collate_views


def _apply_torchvision(image: Image.Image, p: ViewParams, resolution: int) -> Image.Image:
    """torchvision's functionals in ``byol_transforms``' order: the exact reference."""
    view = F.resized_crop(image, *p.crop, [resolution, resolution], T.InterpolationMode.BICUBIC)
    if p.flip:
        view = F.hflip(view)
    if p.jitter is not None:
        order, *factors = p.jitter
        ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
        for i in order:
            if factors[i] is not None:
                view = ops[i](view, factors[i])
    if p.grayscale:
        view = F.rgb_to_grayscale(view, num_output_channels=3)
    if p.blur_sigma is not None:
        view = view.filter(ImageFilter.GaussianBlur(radius=p.blur_sigma))
    if p.solarize:
        view = F.solarize(view, 128)
    return view


def _cv2():
    import cv2

    if not getattr(_cv2, "configured", False):
        cv2.setNumThreads(1)  # one data-loader worker per core; OpenCV's own pool would oversubscribe
        _cv2.configured = True
    return cv2


_IDENTITY = np.arange(256, dtype=np.float32)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _lut(values: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(values), 0, 255).astype(np.uint8)  # PIL's blend truncates


def _colour_opencv(rgb: np.ndarray, p: ViewParams) -> np.ndarray:
    """Colour jitter (torchvision's order and formulas), greyscale, blur and solarize on a uint8 HxWx3 array."""
    cv2 = _cv2()
    if p.jitter is not None:
        order, *factors = p.jitter
        for i in order:
            f = factors[i]
            if f is None:
                continue
            if i == 0:  # brightness: blend with black
                rgb = cv2.LUT(rgb, _lut(_IDENTITY * f))
            elif i == 1:  # contrast: blend with the mean grey level (rounded, as PIL's ImageEnhance)
                mean = int(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).mean() + 0.5)
                rgb = cv2.LUT(rgb, _lut(mean + f * (_IDENTITY - mean)))
            elif i == 2:  # saturation: blend with the greyscale image
                grey = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
                rgb = cv2.addWeighted(rgb, f, grey, 1.0 - f, -0.4999)  # rounds: truncate as PIL
            else:  # hue: rotate H by f turns in float HSV, the exact shift (PIL's 8-bit H is ~1 level off)
                hsv = cv2.cvtColor(rgb.astype(np.float32) * (1 / 255), cv2.COLOR_RGB2HSV)
                hsv[..., 0] = (hsv[..., 0] + f * 360) % 360
                rgb = _to_uint8(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255)
    if p.grayscale:
        rgb = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if p.blur_sigma is not None:
        k = 2 * math.ceil(4 * p.blur_sigma) + 1  # to 4 sigma: PIL's blur is not truncated
        rgb = cv2.GaussianBlur(rgb, (k, k), p.blur_sigma, borderType=cv2.BORDER_REFLECT)
    if p.solarize:
        rgb = np.where(rgb >= 128, 255 - rgb, rgb)
    return np.ascontiguousarray(rgb)


def normalize_views(views: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` -> float, as ``ToTensor`` then ``Normalize`` compute it (bit for bit), on the
    views' device: workers ship a quarter of the bytes and do no float work."""
    if views.dtype != torch.uint8:
        raise TypeError(f"normalize_views takes uint8 views, got {views.dtype}")
    mean = torch.as_tensor(mean, dtype=torch.float32, device=views.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=views.device).view(1, -1, 1, 1)
    return views.float().div_(255).sub_(mean).div_(std)  # in place on the one float copy: 3x faster on CPU
