"""The shipped land mask: land / sea on a 0.1-degree lon/lat grid (``text2earth/assets/land_mask_0.1deg.png``).

Land (white) / sea, north up, 180 W at the left: the GLOBE 1-km land mask of the MIT-licensed
`global-land-mask` 1.0.0 package, reduced by majority vote over 12 x 12 cells (the package itself would
decompress a 1 GB array on import). ``data stats`` draws its world map from it and the web app its
offline base map.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import PIL.Image

LAND_MASK = Path(__file__).resolve().parent.parent / "assets" / "land_mask_0.1deg.png"
CELL_DEG = 0.1


@functools.cache
def land_mask() -> np.ndarray:
    """The whole mask as booleans (1800 x 3600), True on land."""
    return np.asarray(PIL.Image.open(LAND_MASK).convert("L")) > 0


def is_land(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Land or sea at each ``(lat, lon)`` (degrees; arrays that broadcast together)."""
    mask = land_mask()
    rows = np.clip(((90.0 - np.asarray(lat)) / CELL_DEG).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip(((np.asarray(lon) + 180.0) / CELL_DEG).astype(int), 0, mask.shape[1] - 1)
    return mask[rows, cols]


def land_pixels(bounds: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    """Boolean ``height x width`` land mask of ``bounds`` = (lon0, lat0, lon1, lat1) on a lon/lat grid, north up."""
    lon0, lat0, lon1, lat1 = bounds
    lats = np.linspace(lat1, lat0, height, endpoint=False)
    lons = np.linspace(lon0, lon1, width, endpoint=False)
    return is_land(lats[:, None], lons[None, :])
