"""Geo-referencing of the scenes: GeoTIFF / GeoJP2 tags -> a pixel grid in UTM metres -> WGS84 lat/lon."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image


@dataclass(frozen=True)
class GeoGrid:
    """A north-up pixel grid: upper-left *corner* (``x0``, ``y0``) in UTM metres, square pixels."""

    x0: float
    y0: float
    px: float
    width: int
    height: int
    epsg: int

    @property
    def zone(self) -> int:
        return self.epsg % 100

    @property
    def north(self) -> bool:
        return self.epsg // 100 == 326

    def ground_box(self, box: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
        """Pixel box ``(x0, y0, x1, y1)`` (end-exclusive) -> ground ``(xmin, ymin, xmax, ymax)``."""
        c0, r0, c1, r1 = box
        return (self.x0 + c0 * self.px, self.y0 - r1 * self.px, self.x0 + c1 * self.px, self.y0 - r0 * self.px)

    def coarsen(self, factor: int) -> GeoGrid:
        """The grid of ``factor`` x ``factor`` block means (same corner, trailing partial blocks dropped)."""
        return GeoGrid(self.x0, self.y0, self.px * factor, self.width // factor, self.height // factor, self.epsg)


def _geokeys(tags: dict) -> dict[int, int]:
    """The short-valued keys of a GeoTIFF GeoKeyDirectory (tag 34735)."""
    directory = tags.get(34735)
    if not directory:
        raise ValueError("no GeoKeyDirectory (tag 34735): not a GeoTIFF")
    keys = {}
    for i in range(4, 4 + 4 * directory[3], 4):
        key_id, location, _count, value = directory[i : i + 4]
        if location == 0:  # value stored inline (the keys we need always are)
            keys[key_id] = value
    return keys


def read_grid(path: str | Path) -> GeoGrid:
    """The pixel grid of a single-band GeoTIFF / JPEG2000 (GeoJP2 box), from its tags (pixels are not read).

    PIL exposes the GeoTIFF tags for both formats. Landsat products are ``PixelIsPoint`` (the tie
    point is the *centre* of the first pixel), Sentinel-2 ``PixelIsArea``; the grid is always
    returned in the corner convention, as GDAL does. The pixels: ``text2earth.io.bands.read_band_dn``.
    """
    with PIL.Image.open(path) as image:
        tags = dict(image.tag_v2) if hasattr(image, "tag_v2") else dict(getattr(image, "tag", {}))
        width, height = image.size
    if 33922 not in tags or 33550 not in tags:
        raise ValueError(f"{path}: no model tie point / pixel scale tags (33922 / 33550)")
    tie, scale, keys = tags[33922], tags[33550], _geokeys(tags)
    epsg = int(keys.get(3072, 0))
    if not (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        raise ValueError(f"{path}: expected a WGS84 / UTM projection, got EPSG {epsg}")
    px, py = float(scale[0]), float(scale[1])
    if abs(px - py) > 1e-9:
        raise ValueError(f"{path}: non-square pixels {px} x {py}")
    x0, y0 = float(tie[3]) - float(tie[0]) * px, float(tie[4]) + float(tie[1]) * py
    if keys.get(1025, 1) == 2:  # RasterPixelIsPoint: shift from pixel centre to corner
        x0, y0 = x0 - px / 2, y0 + py / 2
    return GeoGrid(x0, y0, px, width, height, epsg)


# WGS84 ellipsoid and the UTM constants.
_A = 6378137.0
_F = 1 / 298.257223563
_K0 = 0.9996
_N = _F / (2 - _F)
_RECT = _A / (1 + _N) * (1 + _N**2 / 4 + _N**4 / 64)  # rectifying radius
_BETA = (
    _N / 2 - 2 * _N**2 / 3 + 37 * _N**3 / 96,
    _N**2 / 48 + _N**3 / 15,
    17 * _N**3 / 480,
)
_DELTA = (
    2 * _N - 2 * _N**2 / 3 - 2 * _N**3,
    7 * _N**2 / 3 - 8 * _N**3 / 5,
    56 * _N**3 / 15,
)


def utm_to_latlon(easting: Any, northing: Any, zone: int, north: bool = True) -> tuple[Any, Any]:
    """WGS84 latitude / longitude in degrees of UTM coordinates (scalars or arrays).

    Krueger's series to third order in the third flattening (sub-millimetre inside a zone), so
    the project needs no pyproj. ``zone`` is 1..60; ``north`` selects the false northing.
    """
    if not 1 <= int(zone) <= 60:
        raise ValueError(f"UTM zone must be 1..60, got {zone!r}")
    e = np.asarray(easting, dtype=np.float64)
    n = np.asarray(northing, dtype=np.float64)
    xi = (n - (0.0 if north else 10_000_000.0)) / (_K0 * _RECT)
    eta = (e - 500_000.0) / (_K0 * _RECT)
    xi_p, eta_p = xi.copy(), eta.copy()
    for j, beta in enumerate(_BETA, start=1):
        xi_p = xi_p - beta * np.sin(2 * j * xi) * np.cosh(2 * j * eta)
        eta_p = eta_p - beta * np.cos(2 * j * xi) * np.sinh(2 * j * eta)
    chi = np.arcsin(np.sin(xi_p) / np.cosh(eta_p))
    lat = chi + sum(delta * np.sin(2 * j * chi) for j, delta in enumerate(_DELTA, start=1))
    lon0 = math.radians(6 * int(zone) - 183)
    lon = lon0 + np.arctan2(np.sinh(eta_p), np.cos(xi_p))
    lat_deg, lon_deg = np.degrees(lat), np.degrees(lon)
    if lat_deg.ndim == 0:
        return float(lat_deg), float(lon_deg)
    return lat_deg, lon_deg
