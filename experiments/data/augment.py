"""Batched crops for the TensorLoader's `crop` hook: uint8 batch on the device in, `size × size` batch out.

Training: fastai's Imagenette recipe, RandomResizedCrop(size, min_scale=0.35) + horizontal flip (p=0.5).
The random parameters are drawn on the CPU from the loader's generator, so a seed fixes them on any
device; only the resampling runs on the device:
- on a GPU, one batched affine resampling (`affine_grid` + `grid_sample`, bilinear), as fastai's own
  batch transforms do;
- on the CPU, each crop is resized by torch's uint8 antialiased bilinear kernel (vectorised for
  channels-last RGB, the cache's layout), several times faster there than a float `grid_sample`.
The two paths sample the same crops; their pixels differ by the interpolation's rounding and antialiasing.
Validation: a center crop (what fastai's RandomResizedCrop does on its valid split).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def cache_side(image_size: int, val_xtra: float = 0.14) -> int:
    """Side to decode images at: fastai's RandomResizedCrop rule (size + val_xtra, rounded up to 8): 152 for 128."""
    return image_size + math.ceil(image_size * val_xtra / 8) * 8


class RandomResizedCropFlip:
    """Per image: a crop of `min_scale`..1 of the area with aspect ratio in `ratio`, resized to `size`, flipped with p."""

    attempts = 10  # like fastai/torchvision: retry a crop that does not fit, then fall back to the whole image

    def __init__(self, size: int, min_scale: float = 0.35, ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5):
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        self.size, self.min_scale, self.ratio, self.flip_p = size, min_scale, tuple(ratio), flip_p

    def __repr__(self) -> str:
        return f"RandomResizedCropFlip(size={self.size}, min_scale={self.min_scale}, ratio={self.ratio}, flip_p={self.flip_p})"

    def params(self, n: int, gen: torch.Generator) -> Tensor:
        """(n, 5) on the CPU: crop width, height (fractions of the image), left, top (fractions), flip (0/1)."""
        area = self.min_scale + (1 - self.min_scale) * torch.rand(n, self.attempts, generator=gen)
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        ratio = torch.exp(lo + (hi - lo) * torch.rand(n, self.attempts, generator=gen))
        w, h = (area * ratio).sqrt(), (area / ratio).sqrt()
        fits = (w <= 1) & (h <= 1)
        first = fits.int().argmax(dim=1, keepdim=True)  # first attempt that fits (0 when none does)
        any_fit = fits.any(dim=1)
        w = torch.where(any_fit, w.gather(1, first).squeeze(1), torch.ones(n))
        h = torch.where(any_fit, h.gather(1, first).squeeze(1), torch.ones(n))
        u = torch.rand(n, 3, generator=gen)
        return torch.stack([w, h, (1 - w) * u[:, 0], (1 - h) * u[:, 1], (u[:, 2] < self.flip_p).float()], dim=1)

    def __call__(self, x: Tensor, gen: torch.Generator) -> Tensor:
        p = self.params(len(x), gen)
        return self._resample(x, p) if x.device.type != "cpu" else self._per_image(x, p)

    def _resample(self, x: Tensor, p: Tensor) -> Tensor:
        """One batched bilinear resampling (float, values 0..255)."""
        w, h, left, top, flip = p.unbind(1)
        theta = torch.zeros(len(x), 2, 3)  # maps output to input coordinates in [-1, 1]
        theta[:, 0, 0] = torch.where(flip > 0, -w, w)
        theta[:, 0, 2] = 2 * left + w - 1
        theta[:, 1, 1] = h
        theta[:, 1, 2] = 2 * top + h - 1
        grid = F.affine_grid(theta.to(x.device), [len(x), x.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _per_image(self, x: Tensor, p: Tensor) -> Tensor:
        """Integer crop boxes, each resized by the uint8 antialiased kernel (uint8 out)."""
        H, W = x.shape[-2:]
        cw = (p[:, 0] * W).round().clamp(1, W).long().tolist()
        ch = (p[:, 1] * H).round().clamp(1, H).long().tolist()
        left = [min(int(f * W), W - w) for f, w in zip(p[:, 2].tolist(), cw)]
        top = [min(int(f * H), H - h) for f, h in zip(p[:, 3].tolist(), ch)]
        out = torch.cat([
            F.interpolate(x[i:i + 1, :, t:t + h, l:l + w], size=(self.size, self.size), mode="bilinear",
                          antialias=True, align_corners=False)
            for i, (w, h, l, t) in enumerate(zip(cw, ch, left, top))])
        flip = p[:, 4].nonzero().squeeze(1)
        out[flip] = out[flip].flip(-1)
        return out


class CenterCrop:
    """The central `size × size` window (no randomness; the generator is ignored)."""

    def __init__(self, size: int):
        self.size = size

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"

    def __call__(self, x: Tensor, gen: torch.Generator | None = None) -> Tensor:
        h, w = x.shape[-2:]
        if h < self.size or w < self.size:
            raise ValueError(f"cannot center-crop {self.size}px from {h}x{w} images")
        top, left = (h - self.size) // 2, (w - self.size) // 2
        return x[..., top:top + self.size, left:left + self.size]
