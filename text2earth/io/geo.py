"""Georeferenced outputs: a Cloud-Optimised GeoTIFF in EPSG:3857 and a STAC Item beside each image.

rasterio and rio-cogeo come with the optional extra ``[geo]``; :func:`require_geo` names it in a
one-line error, so a command checks it before any slow work. The STAC Item is written as plain JSON
(STAC 1.0.0 with the projection extension): it needs no library.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from text2earth.core.errors import UserError
from text2earth.core.resolution import level_to_gsd
from text2earth.core.webmercator import Placement
from text2earth.io.files import atomic_path, write_atomic
from text2earth.io.images import load_image

GEO_EXTRA_HINT = 'install the optional extra: pip install "text2earth[geo]" (in a clone: pip install -e ".[dev,geo]")'
STAC_VERSION = "1.0.0"
PROJECTION_EXTENSION = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def geo_available() -> bool:
    try:
        require_geo()
    except UserError:
        return False
    return True


def require_geo() -> None:
    """Raise a one-line :class:`UserError` naming the ``[geo]`` extra when rasterio / rio-cogeo are missing."""
    try:
        import rasterio  # noqa: F401
        import rio_cogeo  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"georeferenced output needs rasterio and rio-cogeo ({exc.name} is missing): {GEO_EXTRA_HINT}"
        ) from None


def write_cog(image: np.ndarray, path: str | Path, placement: Placement) -> Path:
    """``image`` (H, W) or (H, W, C), uint8 or uint16, as a COG in EPSG:3857 on ``placement``'s grid."""
    require_geo()
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.transform import Affine
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    pixels = image[..., None] if image.ndim == 2 else image
    height, width, count = pixels.shape
    if (width, height) != (placement.width, placement.height):
        raise ValueError(f"image is {width}x{height} but the placement is {placement.width}x{placement.height}")
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": pixels.dtype.name,
        "crs": rasterio.CRS.from_epsg(3857),
        "transform": Affine(*placement.transform),
    }
    # Small tiles (the 64-px demo) need blocks no larger than the image; 256 is rio-cogeo's usual minimum.
    cog = cog_profiles.get("deflate")
    cog.update(blockxsize=min(512, _block(width)), blockysize=min(512, _block(height)))
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(np.moveaxis(pixels, -1, 0))
        with memory.open() as src, atomic_path(path) as tmp:
            cog_translate(src, str(tmp), cog, in_memory=True, quiet=True, overview_resampling="average")
    return Path(path)


def _block(side: int) -> int:
    """The largest power-of-two block (16..512) not larger than ``side``: TIFF tiles are multiples of 16."""
    block = 16
    while block * 2 <= min(side, 512):
        block *= 2
    return block


def stac_item(
    item_id: str, placement: Placement, assets: dict[str, dict[str, Any]], properties: dict[str, Any]
) -> dict[str, Any]:
    """A STAC Item (plain dict): bbox and geometry in WGS84, the projection extension, ``properties`` added."""
    west, south, east, north = placement.bounds_lonlat
    level = placement.level
    props = {
        "datetime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "gsd": round(placement.ground_size_m(), 4),  # STAC's gsd: the true ground length of a pixel
        "proj:epsg": 3857,
        "proj:shape": [placement.height, placement.width],
        "proj:transform": list(placement.transform),
        "proj:bbox": list(placement.bounds_xy),
        "text2earth:level": level,
        "text2earth:nominal_gsd_m": level_to_gsd(level),
        "text2earth:pixel_size_m": round(placement.pixel_size, 6),
        "text2earth:ground_size_m": round(placement.ground_size_m(), 6),
        **{f"text2earth:{key}": value for key, value in properties.items()},
    }
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [PROJECTION_EXTENSION],
        "id": item_id,
        "bbox": [west, south, east, north],
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": props,
        "assets": assets,
        "links": [],
    }


def georeference(image_path: str | Path, placement: Placement, properties: dict[str, Any]) -> dict[str, Any]:
    """Write ``IMAGE.tif`` (COG; an input ``.tif`` is rewritten in place) and ``IMAGE.stac.json`` beside an image.

    Returns what a report needs: the two paths and the pixel sizes.
    """
    image_path = Path(image_path)
    pixels = np.asarray(load_image(image_path))
    tif = write_cog(pixels, image_path.with_suffix(".tif"), placement)
    assets = {"image": {"href": f"./{tif.name}", "type": COG_MEDIA_TYPE, "roles": ["data"]}}
    if image_path.suffix.lower() == ".png":
        assets["preview"] = {"href": f"./{image_path.name}", "type": "image/png", "roles": ["overview"]}
    item = stac_item(image_path.stem, placement, assets, properties)
    stac = image_path.with_suffix(".stac.json")
    write_atomic(stac, json.dumps(item, indent=2).encode())
    return {
        "cog": str(tif),
        "stac": str(stac),
        "bbox": item["bbox"],
        "pixel_size_m": item["properties"]["text2earth:pixel_size_m"],
        "ground_size_m": item["properties"]["text2earth:ground_size_m"],
        "nominal_gsd_m": item["properties"]["text2earth:nominal_gsd_m"],
    }
