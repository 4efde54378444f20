"""The one place images are converted, read, written and laid out in grids.

Conventions: numpy arrays are channel-last (``H,W[,C]`` or ``N,H,W,C``), torch tensors channel-first
(``C,H,W`` or ``N,C,H,W``), as the pipelines' ``"np"`` and ``"pt"`` outputs are. Float values are read
in ``value_range`` (``(0, 1)`` for pipeline outputs, ``(-1, 1)`` for VAE / model space); nothing
guesses the range from the data, because a dark ``[-1, 1]`` image would be guessed wrong.

The converters, by direction: :func:`to_unit_float` (PIL / uint8 -> float32 array in [0, 1]),
:func:`to_tensor` (PIL / array -> float32 tensor in ``value_range``), :func:`normalise_uint8` (uint8
tensor -> float tensor, on any device), :func:`stack_uint8` (PIL images -> uint8 ``N,3,H,W``),
:func:`to_uint8` and :func:`to_pil` (anything -> uint8 array / PIL), :func:`quantize_8bit` (float
tensor -> the 8-bit levels a written file holds), :func:`image_to_tensor` / :func:`mask_to_tensor`
(the inpainting inputs). torch is imported inside the functions that build tensors, so reading and
writing images does not load it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from PIL import ImageDraw, ImageFont

from text2earth.io.files import atomic_path
from text2earth.io.pngmeta import png_info

ImageLike = PIL.Image.Image | np.ndarray | Any  # Any: a torch.Tensor, without importing torch here
ImageInput = ImageLike | str | Path  # an image, or the path of an image file


class ImageReadError(ValueError):
    """A file that exists but is not a decodable image."""


def to_uint8(image: Any, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """A uint8 channel-last array from an array or tensor with float values in ``value_range``.

    uint8 input is returned unchanged (tensors moved to channel-last). Values outside the range are
    clipped; rounding matches diffusers' ``numpy_to_pil`` (``round(x * 255)``).
    """
    if isinstance(image, PIL.Image.Image):
        return np.asarray(image)
    if hasattr(image, "detach"):  # torch.Tensor: channel-first -> channel-last
        tensor = image.detach().cpu()
        if tensor.ndim == 3:
            tensor = tensor.permute(1, 2, 0)
        elif tensor.ndim == 4:
            tensor = tensor.permute(0, 2, 3, 1)
        array = tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
    else:
        array = np.asarray(image)
    if array.ndim not in (2, 3, 4):
        raise ValueError(f"expected an image of 2 to 4 dimensions, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}")
    scaled = (array.astype(np.float32) - low) / (high - low)
    return (np.clip(scaled, 0.0, 1.0) * 255).round().astype(np.uint8)


def to_pil(image: ImageLike, value_range: tuple[float, float] = (0.0, 1.0)) -> PIL.Image.Image:
    """One PIL image (RGB, RGBA or L) from a PIL image, array or tensor."""
    if isinstance(image, PIL.Image.Image):
        return image
    array = to_uint8(image, value_range)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {array.shape[0]}")
        array = array[0]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] not in (3, 4):
        raise ValueError(f"expected 1, 3 or 4 channels, got shape {array.shape}")
    return PIL.Image.fromarray(array)


def as_pil(image: ImageInput, what: str = "image") -> PIL.Image.Image:
    """A PIL image from a file path or anything :func:`to_pil` takes; errors name ``what`` (e.g. "mask")."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    try:
        return to_pil(image)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from exc


def to_unit_float(image: PIL.Image.Image | np.ndarray) -> np.ndarray:
    """A float32 array in [0, 1] (same layout) from a PIL image or uint8 array: ``x / 255``."""
    return np.asarray(image, dtype=np.float32) / 255.0


def to_tensor(image: PIL.Image.Image | np.ndarray, value_range: tuple[float, float] = (0.0, 1.0)) -> Any:
    """A float32 channel-first tensor (``C,H,W`` or ``N,C,H,W``) with values in ``value_range``.

    From a PIL image or a channel-last array: uint8 (0..255) or float already in [0, 1]. ``(-1, 1)`` is
    the VAE's input space.
    """
    import torch

    array = np.asarray(image)
    array = to_unit_float(array) if array.dtype == np.uint8 else array.astype(np.float32, copy=False)
    if array.ndim == 2:
        array = array[..., None]
    tensor = torch.from_numpy(array).movedim(-1, -3).contiguous()
    low, high = (float(v) for v in value_range)
    return tensor if (low, high) == (0.0, 1.0) else tensor * (high - low) + low


def normalise_uint8(pixels: Any, value_range: tuple[float, float] = (-1.0, 1.0)) -> Any:
    """uint8 tensor (any layout, any device) -> float32 in ``value_range``: ``x / 255 * (high - low) + low``."""
    low, high = (float(v) for v in value_range)
    x = pixels.float()
    if (low, high) == (0.0, 1.0):
        return x.div_(255.0)
    return x.div_(255.0 / (high - low)).add_(low)


def stack_uint8(images: Sequence[PIL.Image.Image], size: int | None = None) -> Any:
    """RGB PIL images -> uint8 ``N,3,H,W`` tensor; ``size``: bicubic resize to ``size x size`` where they differ.

    Without ``size`` the images must already share one size.
    """
    import torch

    rgbs = [image.convert("RGB") for image in images]
    if size is not None:
        rgbs = [im if im.size == (size, size) else im.resize((size, size), PIL.Image.Resampling.BICUBIC) for im in rgbs]
    sizes = {im.size for im in rgbs}
    if len(sizes) != 1:
        raise ValueError(f"images of one set must share a size, got {sorted(sizes)}")
    return torch.from_numpy(np.stack([np.asarray(im) for im in rgbs])).permute(0, 3, 1, 2).contiguous()


def quantize_8bit(x: Any) -> Any:
    """A float tensor in [0, 1] clamped and rounded to the 256 levels an 8-bit file stores (still float)."""
    return (x.clamp(0, 1) * 255).round() / 255


def image_to_tensor(image: ImageInput) -> Any:
    """(1, 3, H, W) in [-1, 1] from a PIL image, file, uint8 array or [0, 1] float array / tensor."""
    return to_tensor(as_pil(image, "image").convert("RGB"), (-1.0, 1.0))[None]


def mask_to_tensor(mask: ImageInput) -> Any:
    """(1, 1, H, W) in [0, 1] (1 = repaint); raises for a mask that is not single-channel."""
    pil = as_pil(mask, "mask")
    if pil.mode in ("1", "L"):
        array = np.asarray(pil.convert("L"))
    elif pil.mode in ("RGB", "RGBA", "P"):
        rgb = np.asarray(pil.convert("RGB"))
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise ValueError(
                "mask must be single-channel (grayscale, white = repaint); got a colour image whose channels differ"
            )
        array = rgb[..., 0]
    else:
        raise ValueError(f"mask must be a grayscale (L) or black-and-white image, got mode {pil.mode!r}")
    return to_tensor(array)[None]


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """A uint8 / uint16 array (H x W or H x W x C) as PNG bytes: a shard member, written fast and lossless."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def save_png(
    image: ImageLike,
    path: str | Path,
    text: Mapping[str, Any] | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Path:
    """Write a PNG with ``text`` as tEXt chunks (prompt, level, gsd_m, seed ...), atomically.

    The file is written under a temporary name in the same folder and renamed, so a reader (or a
    crash) never sees half a file. ``None`` values are skipped; other values are stored as ``str``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = to_pil(image, value_range)
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG", pnginfo=png_info(text))
    return path


def read_png_text(path: str | Path) -> dict[str, str]:
    """The tEXt / iTXt chunks of a PNG as a dict (empty if it has none)."""
    with _open(path) as image:
        return dict(getattr(image, "text", {}) or {})


_WIDE_MODES = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "32-bit integer", "F": "floating-point"}


def _open(path: str | Path) -> PIL.Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    try:
        image = PIL.Image.open(path)
        image.load()
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"cannot decode image {str(path)!r}: {exc}") from exc
    return image


def load_image(path: str | Path) -> PIL.Image.Image:
    """An image file in its stored mode (L, RGB, ...; file closed), with the errors of :func:`load_rgb`."""
    with _open(path) as image:
        return image.copy()


def load_rgb(path: str | Path) -> PIL.Image.Image:
    """An 8-bit image file as an RGB PIL image (file closed); clear errors for missing or undecodable files.

    16-bit and float files are refused: PIL's conversion clips them to white, and no stretch of their DN
    range is right for every sensor (single-band 16-bit inputs go through :mod:`text2earth.io.bands`).
    """
    with _open(path) as image:
        if image.mode in _WIDE_MODES:
            raise ImageReadError(
                f"{path} is a {_WIDE_MODES[image.mode]} image: this takes 8-bit RGB; convert it to 8 bits first "
                "(with the stretch that suits its sensor)"
            )
        return image.convert("RGB")


def decode_rgb(data: bytes, name: str = "<bytes>") -> PIL.Image.Image:
    """Encoded image bytes (a shard member) as an RGB PIL image; ``ImageReadError`` when undecodable."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            image.load()  # the full decode: corrupt data fails here
            return image if image.mode == "RGB" else image.convert("RGB")  # no copy for RGB (the loader's hot path)
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"cannot decode image {name}: {exc}") from exc


def make_grid(
    images: Sequence[ImageLike],
    nrow: int = 8,
    padding: int = 2,
    fill: tuple[int, int, int] = (255, 255, 255),
    value_range: tuple[float, float] = (0.0, 1.0),
) -> PIL.Image.Image:
    """Images laid out ``nrow`` per row (as in torchvision), separated by ``padding`` pixels of ``fill``.

    A batched array/tensor counts as a sequence of images. Cells take the size of the first image.
    """
    pils = _as_pil_list(images, value_range)
    if not pils:
        raise ValueError("make_grid needs at least one image")
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    w, h = pils[0].size
    cols = min(nrow, len(pils))
    rows = math.ceil(len(pils) / cols)
    grid = PIL.Image.new("RGB", (cols * w + (cols + 1) * padding, rows * h + (rows + 1) * padding), fill)
    for i, img in enumerate(pils):
        r, c = divmod(i, cols)
        grid.paste(_fit(img, (w, h)), (padding + c * (w + padding), padding + r * (h + padding)))
    return grid


def labelled_grid(
    rows: Sequence[Sequence[ImageLike]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cell_size: int | tuple[int, int] | None = None,
    padding: int = 4,
    font_size: int = 12,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> PIL.Image.Image:
    """A figure grid with text labels in white margins, e.g. rows = prompts, columns = levels.

    ``cell_size`` (an int for square cells, or ``(width, height)``) resizes every image; by default
    cells take the size of the first image. Long row labels are wrapped to a margin at most two
    cells wide.
    """
    rows = [_as_pil_list(r, value_range) for r in rows]
    if not rows or not any(rows):
        raise ValueError("labelled_grid needs at least one image")
    n_cols = max(len(r) for r in rows)
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"got {len(row_labels)} row labels for {len(rows)} rows")
    if col_labels is not None and len(col_labels) != n_cols:
        raise ValueError(f"got {len(col_labels)} column labels for {n_cols} columns")
    first = next(img for r in rows for img in r)
    if cell_size is None:
        cw, ch = first.size
    elif isinstance(cell_size, int):
        cw = ch = cell_size
    else:
        cw, ch = cell_size

    font = load_font(font_size)
    measure = ImageDraw.Draw(PIL.Image.new("RGB", (1, 1)))
    line_h = _text_size(measure, "Ag", font)[1]
    row_texts = [_wrap(measure, str(t), font, 2 * cw) for t in row_labels] if row_labels else []
    col_texts = [_wrap(measure, str(t), font, cw) for t in col_labels] if col_labels else []
    left = max((max(_text_size(measure, ln, font)[0] for ln in lines) for lines in row_texts), default=0)
    left = left + 2 * padding if row_texts else 0
    top = max((len(lines) for lines in col_texts), default=0) * (line_h + 2)
    top = top + 2 * padding if col_texts else 0

    width = left + n_cols * (cw + padding) + padding
    height = top + len(rows) * (ch + padding) + padding
    canvas = PIL.Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, lines in enumerate(col_texts):
        x0 = left + padding + c * (cw + padding)
        for k, line in enumerate(lines):
            tw = _text_size(draw, line, font)[0]
            draw.text((x0 + (cw - tw) // 2, padding + k * (line_h + 2)), line, fill=(0, 0, 0), font=font)
    for r, row in enumerate(rows):
        y0 = top + padding + r * (ch + padding)
        for c, img in enumerate(row):
            canvas.paste(_fit(img, (cw, ch)), (left + padding + c * (cw + padding), y0))
        if row_texts:
            lines = row_texts[r]
            block = len(lines) * (line_h + 2)
            for k, line in enumerate(lines):
                draw.text((padding, y0 + max(0, (ch - block) // 2) + k * (line_h + 2)), line, fill=(0, 0, 0), font=font)
    return canvas


def _as_pil_list(images: Any, value_range: tuple[float, float]) -> list[PIL.Image.Image]:
    if isinstance(images, PIL.Image.Image):
        return [images]
    if isinstance(images, np.ndarray) or hasattr(images, "detach"):
        if images.ndim == 4:  # a batch
            return [to_pil(img, value_range) for img in images]
        return [to_pil(images, value_range)]
    return [to_pil(img, value_range) for img in images]


def _fit(image: PIL.Image.Image, size: tuple[int, int]) -> PIL.Image.Image:
    image = image.convert("RGB")
    return image if image.size == size else image.resize(size, PIL.Image.Resampling.BICUBIC)


def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Any) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1 - x0, y1 - y0


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, max_width: int) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels (a single over-long word keeps its own line)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split():
            candidate = f"{current} {word}".strip()
            if current and _text_size(draw, candidate, font)[0] > max_width:
                lines.append(current)
                current = word
            else:
                current = candidate
        lines.append(current)
    return lines
