"""Modalities and single-band images (NIR, PAN, SAR): reading, scaling, replicating, writing back.

Scaling (the one documented convention): a band is a float32 ``(H, W)`` array in ``[0, 1]``.
- 8-bit files: ``value / 255``.
- 16-bit files: ``(value - lo) / (hi - lo)`` clipped to ``[0, 1]``, with ``dn_range = (lo, hi)``; the
  default ``(0, 65535)`` is the full range; ``"auto"`` takes the image's own 1st..99th percentiles (the
  stretch ``data_modules/pairs.py`` applies, there over all training tiles). Raw sensor DN (Landsat-8 NIR/PAN sit around 5,000..25,000) need
  the stretch the model was trained with: pair shards and translator folders record theirs.
Writing inverts the same mapping, so ``read_band(write_band(x))`` returns ``x`` to within one quantisation
step. The VAE sees a band replicated to 3 identical channels; outputs go back to one band as the channel mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from text2earth.io.files import atomic_path
from text2earth.io.images import ImageReadError

MODALITIES = ("rgb", "sar", "nir", "pan")
SINGLE_BAND = ("sar", "nir", "pan")
FULL_RANGE_16 = (0.0, 65535.0)
# Translation tasks: condition -> target ("rgb" or a band). Super-resolution and dehazing map RGB to RGB.
TASKS: dict[str, tuple[str, str]] = {
    "pan2rgb": ("pan", "rgb"),
    "nir2rgb": ("nir", "rgb"),
    "pan2nir": ("pan", "nir"),
    "sar2rgb": ("sar", "rgb"),
    "sr_x2": ("rgb", "rgb"),
    "sr_x4": ("rgb", "rgb"),
    "dehaze": ("rgb", "rgb"),
}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
AUTO_PERCENTILES = (1.0, 99.0)
DnRange = tuple[float, float] | str
_SUFFIX_FORMATS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}


def check_modality(modality: str) -> str:
    """``modality`` if known, else a one-line ``ValueError``."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    return modality


def check_task(task: str) -> str:
    """``task`` if known, else a one-line ``ValueError``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return task


def _check_range(dn_range: DnRange, array: np.ndarray | None = None) -> tuple[float, float]:
    if isinstance(dn_range, str):
        if dn_range != "auto" or array is None:
            raise ValueError(f"dn_range must be (lo, hi) or 'auto', got {dn_range!r}")
        lo, hi = (float(v) for v in np.percentile(array, AUTO_PERCENTILES))
        return (lo, hi) if hi > lo else (lo, lo + 1.0)  # a flat image: anything, but no division by zero
    lo, hi = (float(v) for v in dn_range)
    if not hi > lo:
        raise ValueError(f"dn_range must be (lo, hi) with hi > lo, got {dn_range!r}")
    return lo, hi


def band_from_array(array: np.ndarray, dn_range: DnRange = FULL_RANGE_16, name: str = "image") -> np.ndarray:
    """A uint8 / uint16 / int ``(H, W)`` array (or ``(H, W, 3)`` with equal channels) as a ``[0, 1]`` band."""
    if array.ndim == 3:
        if array.shape[-1] == 1 or (
            array.shape[-1] == 3
            and np.array_equal(array[..., 0], array[..., 1])
            and np.array_equal(array[..., 0], array[..., 2])
        ):
            array = array[..., 0]
        else:
            raise ValueError(f"{name} has {array.shape[-1]} different bands; a single-band image was expected")
    if array.ndim != 2:
        raise ValueError(f"{name} has shape {array.shape}; a single-band (H, W) image was expected")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype.kind in "ui":
        lo, hi = _check_range(dn_range, array)
        return np.clip((array.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
    raise ValueError(f"{name} has dtype {array.dtype}; 8- or 16-bit integer pixels were expected")


def read_band_dn(path: str | Path) -> np.ndarray:
    """The raw pixels of a single-band image file (PNG, TIFF, JPEG2000; 8 or 16 bit) as uint8 / uint16 ``(H, W)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    try:
        with PIL.Image.open(path) as image:
            image.load()
            if image.mode in _SIXTEEN_BIT_MODES:
                array = np.asarray(image).astype(np.int64)
                if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
                    raise ValueError(f"{path} has values outside 0..65535 (mode {image.mode})")
                return array.astype(np.uint16)
            if image.mode in ("L", "P", "RGB"):
                return np.asarray(image.convert("L") if image.mode == "P" else image)
            raise ValueError(f"{path} has mode {image.mode}; a single-band 8- or 16-bit image was expected")
    except (PIL.UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageReadError(f"cannot decode image {str(path)!r}: {exc}") from exc


def read_band(path: str | Path, dn_range: DnRange = FULL_RANGE_16) -> np.ndarray:
    """A single-band PNG or TIFF (8 or 16 bit) as float32 ``(H, W)`` in ``[0, 1]`` (see the module doc)."""
    return band_from_array(read_band_dn(path), dn_range, name=str(Path(path)))


def write_band(
    path: str | Path, band: np.ndarray, bits: int = 8, dn_range: tuple[float, float] = FULL_RANGE_16
) -> Path:
    """Write a ``[0, 1]`` band as a single-band 8- or 16-bit PNG/TIFF (by suffix), atomically."""
    path = Path(path)
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"single-band output must be .png, .tif or .tiff, got {path.name!r}")
    band = np.clip(np.asarray(band, dtype=np.float32), 0.0, 1.0)
    if band.ndim != 2:
        raise ValueError(f"a band must be (H, W), got shape {band.shape}")
    if bits == 8:
        image = PIL.Image.fromarray((band * 255).round().astype(np.uint8))
    elif bits == 16:
        lo, hi = _check_range(dn_range)
        image = PIL.Image.fromarray((lo + band * (hi - lo)).round().astype(np.uint16))
    else:
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)
    return path


def replicate(band: np.ndarray) -> np.ndarray:
    """``(H, W)`` band -> ``(H, W, 3)`` with three identical channels (what the RGB VAE takes)."""
    return np.repeat(np.asarray(band, dtype=np.float32)[..., None], 3, axis=2)


def to_band(image: Any) -> np.ndarray:
    """An ``(H, W, 3)`` float ``[0, 1]`` image (or tensor ``3, H, W``) back to one band: the channel mean."""
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().permute(1, 2, 0).numpy()
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        return array
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {array.shape}")
    return array.mean(axis=2)
