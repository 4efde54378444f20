"""Real-ESRGAN-style synthetic degradations: clean tile -> (degraded low-res input, clean target) pairs.

Blur (isotropic or anisotropic Gaussian), resize (area/bilinear/bicubic), noise (Gaussian colour/grey or
Poisson) and JPEG are applied each with a probability and in a random order (as BSRGAN shuffles them; a fixed
order teaches the network one artefact stack only), then a final resize to exactly ``1/scale`` of the clean
size and 8-bit quantisation, because real inputs are 8-bit files. Every random draw comes from the
``numpy.random.Generator`` passed in, so a seed reproduces a pair exactly.
"""

from __future__ import annotations

import contextlib
import io
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from text2earth.io.images import quantize_8bit, to_tensor, to_uint8

RESIZE_MODES = ("area", "bilinear", "bicubic")


@dataclass(frozen=True)
class DegradationConfig:
    """Probabilities and ranges; defaults are Real-ESRGAN's first order, a little milder for 64-px tiles."""

    blur_prob: float = 0.8
    blur_kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15)
    blur_sigma: tuple[float, float] = (0.2, 2.0)
    anisotropic_prob: float = 0.5
    resize_prob: float = 0.8
    resize_range: tuple[float, float] = (0.5, 1.5)
    noise_prob: float = 0.8
    gaussian_sigma: tuple[float, float] = (1.0, 20.0)  # in 8-bit levels
    poisson_prob: float = 0.4
    poisson_scale: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob: float = 0.4
    jpeg_prob: float = 0.8
    jpeg_quality: tuple[int, int] = (40, 95)


def sample_rng(seed: int, key: str) -> np.random.Generator:
    """A generator fixed by (seed, sample key): the same tile always gets the same degradation (validation)."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """Normalised (size, size) Gaussian with axes ``sigma_x``/``sigma_y`` rotated by ``theta`` radians."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    cos, sin = math.cos(theta), math.sin(theta)
    u, v = cos * xx + sin * yy, -sin * xx + cos * yy
    k = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).float()


def blur(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depth-wise convolution of a (C, H, W) image with reflect padding (no dark frame at the borders)."""
    c = img.shape[0]
    pad = kernel.shape[-1] // 2
    # Reflect padding needs pad < size; tiny images fall back to replicate.
    mode = "reflect" if pad < min(img.shape[-2:]) else "replicate"
    x = F.pad(img[None], (pad, pad, pad, pad), mode=mode)
    return F.conv2d(x, kernel.expand(c, 1, *kernel.shape), groups=c)[0]


def resize(img: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    x = img[None]
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")[0]
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)[0]


def jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip through PIL's JPEG encoder (the artefacts real web imagery carries)."""
    arr = to_uint8(img)
    buf = io.BytesIO()
    Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(buf, format="JPEG", quality=int(quality))
    out = np.asarray(Image.open(buf)).copy()
    out = out[..., None] if out.ndim == 2 else out
    return to_tensor(out)


def add_noise(img: torch.Tensor, rng: np.random.Generator, cfg: DegradationConfig) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(rng.integers(2**63)))
    gray = rng.random() < cfg.gray_noise_prob
    shape = (1, *img.shape[1:]) if gray else img.shape
    if rng.random() < cfg.poisson_prob:
        # Shot noise: counts at 8-bit levels, amplified by `scale` (Real-ESRGAN's formulation).
        base = img.mean(0, keepdim=True) if gray else img
        counts = torch.poisson(base.clamp(0, 1) * 255, generator=gen) / 255
        noise = (counts - base) * rng.uniform(*cfg.poisson_scale)
    else:
        noise = torch.randn(shape, generator=gen) * (rng.uniform(*cfg.gaussian_sigma) / 255)
    return img + noise.expand_as(img)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run tiny ops on one thread: on a busy machine, intra-op threads cost 10x more than these 64-px ops take
    (measured 18-60 ms vs 3 ms per pair on 2 shared cores). DataLoader workers are single-threaded already."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def degrade(
    hr: torch.Tensor, scale: int, rng: np.random.Generator, cfg: DegradationConfig | None = None
) -> torch.Tensor:
    """Degrade a clean (C, H, W) float image in [0, 1] to (C, H // scale, W // scale), quantised to 8 bits."""
    with _one_thread():
        return _degrade(hr, scale, rng, cfg or DegradationConfig())


def _degrade(hr: torch.Tensor, scale: int, rng: np.random.Generator, cfg: DegradationConfig) -> torch.Tensor:
    h, w = hr.shape[-2:]
    target = (h // scale, w // scale)
    if min(target) < 1:
        raise ValueError(f"image {h}x{w} is too small for scale {scale}")
    img = hr.float()
    ops = ["blur", "resize", "noise", "jpeg"]
    rng.shuffle(ops)
    for op in ops:
        if op == "blur" and rng.random() < cfg.blur_prob:
            size = int(rng.choice(cfg.blur_kernel_sizes))
            sx = rng.uniform(*cfg.blur_sigma)
            sy = rng.uniform(*cfg.blur_sigma) if rng.random() < cfg.anisotropic_prob else sx
            img = blur(img, gaussian_kernel(size, sx, sy, rng.uniform(0, math.pi)))
        elif op == "resize" and rng.random() < cfg.resize_prob:
            # Relative to the final size, so an intermediate downscale really loses detail before the last one.
            f = rng.uniform(*cfg.resize_range)
            size = (max(1, round(target[0] * f)), max(1, round(target[1] * f)))
            img = resize(img, size, str(rng.choice(RESIZE_MODES)))
        elif op == "noise" and rng.random() < cfg.noise_prob:
            img = add_noise(img, rng, cfg)
        elif op == "jpeg" and rng.random() < cfg.jpeg_prob:
            img = jpeg(img, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    if tuple(img.shape[-2:]) != target:
        img = resize(img, target, str(rng.choice(RESIZE_MODES)))
    return quantize_8bit(img)


def make_pair(
    hr: torch.Tensor, scale: int, rng: np.random.Generator, cfg: DegradationConfig | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(lq, gt): the clean image cropped to a multiple of ``scale`` and its degraded low-res version."""
    h, w = hr.shape[-2:]
    gt = hr[..., : h - h % scale, : w - w % scale]
    return degrade(gt, scale, rng, cfg), gt
