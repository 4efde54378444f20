"""Format-preserving image I/O for the enhancer: what comes in as PNG/JPEG/TIFF goes out the same way.

``text2earth.io.images`` covers the project's 8-bit RGB figures; enhancing a dataset in place of the original
needs more: 16-bit greyscale, alpha, greyscale, the JPEG/TIFF container options. The network sees RGB floats
in [0, 1]; :class:`ImageMeta` remembers how to turn its output back into the original kind of file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from text2earth.io.images import ImageReadError, to_uint8, to_unit_float
from text2earth.io.pngmeta import png_info

IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


@dataclass
class ImageMeta:
    format: str  # PNG | JPEG | TIFF
    mode: str  # the mode written back: RGB, RGBA, L, LA or I;16
    alpha: np.ndarray | None = None  # float (H, W) in [0, 1], upscaled separately (the network is RGB only)
    save_kwargs: dict[str, Any] = field(default_factory=dict)


def decode(data: bytes | Path | str, format_hint: str | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Decode a file (path or bytes) to an RGB float32 (H, W, 3) array in [0, 1] plus what is needed to re-encode it.

    Raises :class:`text2earth.io.images.ImageReadError` for anything that is not a decodable image.
    """
    try:
        with PIL.Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            img.load()
            return _split(img, format_hint)
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, ImageReadError):
            raise
        raise ImageReadError(f"cannot decode image: {exc}") from exc


def _split(img: PIL.Image.Image, format_hint: str | None) -> tuple[np.ndarray, ImageMeta]:
    fmt = (img.format or format_hint or "PNG").upper()
    fmt = "JPEG" if fmt == "MPO" else fmt  # phone JPEGs open as MPO
    if fmt not in ("PNG", "JPEG", "TIFF"):
        raise ImageReadError(f"unsupported image format {fmt}")
    kwargs: dict[str, Any] = {}
    if img.info.get("icc_profile"):
        kwargs["icc_profile"] = img.info["icc_profile"]
    if fmt == "JPEG" and img.info.get("exif"):
        kwargs["exif"] = img.info["exif"]
    if fmt == "TIFF" and img.info.get("compression") not in (None, "raw"):
        kwargs["compression"] = img.info["compression"]
    if fmt == "PNG" and getattr(img, "text", None):
        kwargs["pnginfo"] = png_info(img.text)

    mode = img.mode
    alpha = None
    if mode in _SIXTEEN_BIT:
        # 16-bit greyscale (common for single-band rasters): keep the full precision through the network.
        grey = np.asarray(img, dtype=np.float32) / 65535.0
        if grey.max(initial=0) > 1.0:
            raise ImageReadError(f"mode {mode} image has values above 65535")
        return np.repeat(grey[..., None], 3, axis=2), ImageMeta(fmt, "I;16", None, kwargs)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        img = img.convert("LA" if mode == "LA" else "RGBA")
        alpha = to_unit_float(img.getchannel("A"))
        out_mode = img.mode
    elif mode == "L":
        out_mode = "L"
    else:  # RGB, P, CMYK, YCbCr, 1 ...: enhance and write as RGB
        out_mode = "RGB"
    if fmt == "JPEG" and out_mode not in ("RGB", "L"):
        out_mode = "RGB"
    rgb = to_unit_float(img.convert("RGB"))
    return rgb, ImageMeta(fmt, out_mode, alpha, kwargs)


def encode(rgb: np.ndarray, meta: ImageMeta, jpeg_quality: int = 95) -> bytes:
    """Encode the network's RGB float (H, W, 3) output the way the input was stored."""
    h, w = rgb.shape[:2]
    rgb = np.clip(rgb, 0.0, 1.0)
    if meta.mode == "I;16":
        grey = (rgb.mean(axis=2) * 65535).round().astype(np.uint16)
        img = PIL.Image.fromarray(grey)
    else:
        img = PIL.Image.fromarray(to_uint8(rgb))
        if meta.mode in ("L", "LA"):
            img = img.convert("L")
        if meta.alpha is not None:
            a8 = PIL.Image.fromarray(to_uint8(meta.alpha))
            img.putalpha(a8.resize((w, h), PIL.Image.Resampling.BICUBIC))
    kwargs = dict(meta.save_kwargs)
    if meta.format == "JPEG":
        kwargs.setdefault("quality", jpeg_quality)
    buf = io.BytesIO()
    img.save(buf, format=meta.format, **kwargs)
    return buf.getvalue()
