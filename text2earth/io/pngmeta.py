"""The text chunks written into output PNGs: one builder, so every writer uses the same keys and formats.

Every generated or edited image records ``prompt``, ``level`` and ``gsd_m`` first, then what its
writer adds (seed, model, steps ...). A new key is one more keyword argument at the caller;
:func:`text2earth.io.images.read_png_text` reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import PngImagePlugin

from text2earth.core.resolution import level_to_gsd
from text2earth.io.files import content_hash


def number(value: float) -> str:
    """``value`` as short text that reads back as exactly the same float (``13.7``, ``18``, ``15.415037499278844``)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def model_fields(folder: str | Path, name: str = "model") -> dict[str, str]:
    """``{name}`` (the absolute folder) and ``{name}_sha256`` (its content hash): which weights made an image."""
    return {name: str(Path(folder).resolve()), f"{name}_sha256": content_hash(folder)}


def image_text(caption: str, level: float, **extra: Any) -> dict[str, str]:
    """``prompt``, ``level``, ``gsd_m`` ("unknown" off the level scale), then ``extra`` in order.

    ``None`` values are left out; strings are kept as given (callers format floats, e.g. ``f"{g:g}"``);
    anything else is stored as ``str(value)``.
    """
    gsd = level_to_gsd(level)
    text = {"prompt": caption, "level": number(level), "gsd_m": "unknown" if gsd is None else f"{gsd:g}"}
    text.update({key: str(value) for key, value in extra.items() if value is not None})
    return text


def png_info(text: Mapping[str, Any] | None) -> PngImagePlugin.PngInfo:
    """``text`` as PNG tEXt chunks (``None`` values skipped, others stored as ``str``)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        if value is not None:
            info.add_text(str(key), str(value))
    return info
