"""The offline base map: Web-Mercator tiles drawn from the shipped land mask and the embedded scenes' outlines.

No internet is assumed; an online tile URL is only a setting of the page. Land and sea come from the
0.1-degree mask that ``data stats`` uses; the real scenes the demo model was trained on are outlined in
orange, so the page shows where real imagery of each level exists.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
import PIL.Image
from PIL import ImageDraw

from text2earth.core.errors import UserError
from text2earth.core.webmercator import TILE_PX
from text2earth.io.landmask import is_land

SEA = (170, 200, 224)
LAND = (226, 222, 205)
OUTLINE = (230, 120, 20)
MAX_ZOOM = 22


def tile_lat_lon(z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes of the tile's pixel rows and longitudes of its pixel columns (pixel centres)."""
    n = 2.0**z
    cols = (x + (np.arange(TILE_PX) + 0.5) / TILE_PX) / n
    rows = (y + (np.arange(TILE_PX) + 0.5) / TILE_PX) / n
    lon = cols * 360.0 - 180.0
    lat = np.degrees(np.arctan(np.sinh(math.pi * (1.0 - 2.0 * rows))))
    return lat, lon


@functools.lru_cache(maxsize=512)
def render_tile(z: int, x: int, y: int, outlines: tuple[tuple[tuple[float, float], ...], ...] = ()) -> bytes:
    """One 256-px PNG tile of the offline base map."""
    if not 0 <= z <= MAX_ZOOM or not (0 <= x < 2**z and 0 <= y < 2**z):
        raise UserError(f"tile {z}/{x}/{y} does not exist")
    lat, lon = tile_lat_lon(z, x, y)
    land = is_land(lat[:, None], lon[None, :])
    pixels = np.where(land[..., None], np.array(LAND, np.uint8), np.array(SEA, np.uint8)).astype(np.uint8)
    image = PIL.Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    n = 2.0**z
    for ring in outlines:
        points = []
        for lo, la in (*ring, ring[0]):
            px = ((lo + 180.0) / 360.0 * n - x) * TILE_PX
            merc = math.log(math.tan(math.pi / 4 + math.radians(la) / 2))
            py = ((1.0 - merc / math.pi) / 2.0 * n - y) * TILE_PX
            points.append((px, py))
        draw.line(points, fill=OUTLINE, width=2)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()
