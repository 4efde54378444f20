"""``text2earth data stats SHARDS --out DIR``: where the samples are and what they hold, as PNGs and JSON.

Reads only each sample's ``.json`` and ``.txt`` (images are not decoded), from any shard specification
``expand_shards`` accepts (``pipe:`` URLs included). Writes:

* ``world_density.png``: sample count per ``cell`` x ``cell`` degree cell on a plain lon/lat grid
  (log colour scale, graticule, land drawn from a shipped 0.1-degree land mask so nothing is downloaded),
  with a second panel zoomed on the extent of the data at a finer cell;
* ``histograms.png``: zoom level (0 = unknown), quality score, caption length in words, source;
* ``stats.json``: the same numbers.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from PIL import ImageDraw
from tqdm.auto import tqdm

from data_modules.webdataset_datamodule import SkipCounter, sample_level
from text2earth.core.resolution import level_to_gsd
from text2earth.io.files import write_atomic
from text2earth.io.images import load_font, save_png
from text2earth.io.landmask import land_pixels
from text2earth.io.shards import expand_shards, iter_samples

BACKGROUND = (24, 28, 38)
LAND = (58, 64, 78)
GRID = (70, 78, 96)
TEXT = (230, 230, 230)
# Perceptually ordered ramp for counts (dark purple -> orange -> pale yellow), interpolated.
RAMP = np.array([(60, 20, 100), (150, 40, 120), (230, 90, 70), (250, 170, 60), (252, 250, 190)], dtype=np.float32)


def _ramp(t: np.ndarray) -> np.ndarray:
    pos = np.clip(t, 0, 1) * (len(RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(RAMP) - 2)
    frac = (pos - lo)[..., None]
    return (RAMP[lo] * (1 - frac) + RAMP[lo + 1] * frac).astype(np.uint8)


def collect(shards: Any) -> dict[str, Any]:
    """One pass over the shards: locations, levels, quality scores, caption lengths, sources, modalities."""
    urls = expand_shards(shards)
    skips = SkipCounter()
    lats, lons, quality, words = [], [], [], []
    levels: Counter = Counter()
    sources: Counter = Counter()
    modalities: Counter = Counter()
    samples = bad = 0
    for sample in tqdm(iter_samples(urls, handler=skips), desc="stats", unit="sample"):
        try:
            meta = json.loads(sample.get("json") or b"{}")
            caption = sample["txt"].decode("utf-8") if "txt" in sample else meta.get("caption", "")
            level, _gsd = sample_level(meta)
        except (ValueError, UnicodeDecodeError) as exc:
            skips(exc)
            bad += 1
            continue
        samples += 1
        levels[round(level, 2)] += 1
        sources[str(meta.get("source", "unknown"))] += 1
        modalities[str(meta.get("modality", "rgb"))] += 1
        words.append(len(caption.split()))
        q = meta.get("quality", meta.get("img_quality_score"))
        if q is not None:
            quality.append(float(q))
        if meta.get("lat") is not None and meta.get("lon") is not None:
            lats.append(float(meta["lat"]))
            lons.append(float(meta["lon"]))
    return {
        "shards": len(urls),
        "samples": samples,
        "skipped": bad,
        # A damaged shard (truncated, not a tar) is read up to the damage; the samples after it are counted
        # from the count its writer recorded in the manifest beside it, else as one (a lower bound).
        "damaged_shards": skips.damaged_shards,
        "lost_samples": skips.count - bad,
        "lost_exact": skips.unknown_losses == 0,
        "lat": np.array(lats),
        "lon": np.array(lons),
        "levels": levels,
        "sources": sources,
        "modalities": modalities,
        "quality": np.array(quality),
        "words": np.array(words),
    }


def density_panel(
    lat: np.ndarray, lon: np.ndarray, bounds: tuple[float, float, float, float], cell: float, px: float, title: str
) -> PIL.Image.Image:
    """Counts per ``cell``-degree cell inside ``bounds`` = (lon0, lat0, lon1, lat1), ``px`` pixels per degree."""
    lon0, lat0, lon1, lat1 = bounds
    nx, ny = max(1, round((lon1 - lon0) / cell)), max(1, round((lat1 - lat0) / cell))
    counts, _, _ = np.histogram2d(lat, lon, bins=(ny, nx), range=((lat0, lat1), (lon0, lon1)))
    counts = counts[::-1]  # north up
    width, height = round((lon1 - lon0) * px), round((lat1 - lat0) * px)
    rgb = np.zeros((ny, nx, 3), dtype=np.uint8)
    rgb[:] = BACKGROUND
    filled = counts > 0
    if filled.any():
        scaled = np.log1p(counts) / np.log1p(counts.max())
        rgb[filled] = _ramp(0.15 + 0.85 * scaled[filled])
    cells = np.asarray(PIL.Image.fromarray(rgb).resize((width, height), PIL.Image.Resampling.NEAREST)).copy()
    empty = np.asarray(PIL.Image.fromarray(filled).resize((width, height), PIL.Image.Resampling.NEAREST)) == 0
    cells[empty & land_pixels(bounds, width, height)] = LAND
    image = PIL.Image.fromarray(cells)
    margin_l, margin_t, margin_b = 56, 30, 44
    canvas = PIL.Image.new("RGB", (width + margin_l + 16, height + margin_t + margin_b), BACKGROUND)
    canvas.paste(image, (margin_l, margin_t))
    draw = ImageDraw.Draw(canvas)
    font = load_font(13)
    step = _graticule_step(max(lon1 - lon0, lat1 - lat0))
    for lon_line in np.arange(math.ceil(lon0 / step) * step, lon1 + 1e-9, step):
        x = margin_l + (lon_line - lon0) * px
        draw.line([(x, margin_t), (x, margin_t + height)], fill=GRID)
        draw.text((x - 12, margin_t + height + 4), f"{lon_line:g}°", fill=TEXT, font=font)
    for lat_line in np.arange(math.ceil(lat0 / step) * step, lat1 + 1e-9, step):
        y = margin_t + (lat1 - lat_line) * px
        draw.line([(margin_l, y), (margin_l + width, y)], fill=GRID)
        draw.text((4, y - 7), f"{lat_line:g}°", fill=TEXT, font=font)
    draw.rectangle([margin_l, margin_t, margin_l + width, margin_t + height], outline=GRID)
    peak = int(counts.max()) if counts.size else 0
    draw.text((margin_l, 8), f"{title}  (cell {cell:.3g}°, max {peak} per cell, log colour)", fill=TEXT, font=font)
    legend_x = margin_l + width - 160
    for i in range(120):
        draw.line(
            [(legend_x + i, margin_t + height + 24), (legend_x + i, margin_t + height + 34)],
            fill=tuple(_ramp(np.array(0.15 + 0.85 * i / 119))),
        )
    draw.text((legend_x - 14, margin_t + height + 22), "1", fill=TEXT, font=font)
    draw.text((legend_x + 124, margin_t + height + 22), str(peak), fill=TEXT, font=font)
    return canvas


def _graticule_step(span: float) -> float:
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30):
        if span / step <= 8:
            return step
    return 30.0


def _extent(lat: np.ndarray, lon: np.ndarray) -> tuple[tuple[float, float, float, float], float]:
    """A padded box around the data and a cell giving ~60 cells along its longer side."""
    span = max(float(lon.max() - lon.min()), float(lat.max() - lat.min()), 0.05)
    pad = 0.1 * span
    box = (
        max(-180.0, float(lon.min()) - pad),
        max(-90.0, float(lat.min()) - pad),
        min(180.0, float(lon.max()) + pad),
        min(90.0, float(lat.max()) + pad),
    )
    return box, (span + 2 * pad) / 60


def _metres(level: float) -> str:
    gsd = level_to_gsd(level)  # levels are binned to 3 decimals: 9.99 m is the 10 m level
    if gsd is None:
        return "unknown"
    return f"{round(gsd)} m" if gsd >= 9.5 else f"{gsd:.2g} m"


def bar_chart(title: str, labels: list[str], values: list[int], size: tuple[int, int] = (520, 300)) -> PIL.Image.Image:
    """A labelled bar chart drawn with PIL (no plotting library)."""
    width, height = size
    canvas = PIL.Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = load_font(12)
    draw.text((10, 6), title, fill=(0, 0, 0), font=load_font(14))
    left, right, top, bottom = 50, 10, 30, 56
    draw.line([(left, height - bottom), (width - right, height - bottom)], fill=(0, 0, 0))
    if not values or max(values) == 0:
        draw.text((left + 10, height // 2), "no values", fill=(120, 120, 120), font=font)
        return canvas
    peak = max(values)
    n = len(values)
    slot = (width - left - right) / n
    label_every = max(1, math.ceil(n / 14))
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x0 = left + i * slot + max(1, slot * 0.12)
        x1 = left + (i + 1) * slot - max(1, slot * 0.12)
        y0 = height - bottom - (height - top - bottom) * value / peak
        draw.rectangle([x0, y0, max(x0, x1), height - bottom], fill=(70, 110, 180))
        if i % label_every == 0:
            draw.text((x0, height - bottom + 4 + 14 * ((i // label_every) % 2)), label, fill=(0, 0, 0), font=font)
    for frac in (0.5, 1.0):
        y = height - bottom - (height - top - bottom) * frac
        draw.text((4, y - 6), f"{round(peak * frac):d}", fill=(80, 80, 80), font=font)
    return canvas


def _binned(values: np.ndarray, width: float, lo: float | None = None) -> tuple[list[str], list[int]]:
    if values.size == 0:
        return [], []
    start = math.floor((values.min() if lo is None else lo) / width) * width
    edges = np.arange(start, values.max() + width + 1e-9, width)
    counts, edges = np.histogram(values, bins=edges)
    return [f"{e:g}" for e in edges[:-1]], counts.tolist()


def _describe(values: np.ndarray) -> dict[str, float] | None:
    if values.size == 0:
        return None
    return {
        "n": int(values.size),
        "mean": round(float(values.mean()), 4),
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
    }


def dataset_stats(shards: Any, out_dir: str | Path, cell_degrees: float = 2.0) -> dict[str, Any]:
    """Write ``world_density.png``, ``histograms.png`` and ``stats.json`` to ``out_dir``; returns the summary."""
    if not 0.05 <= cell_degrees <= 30:
        raise ValueError(f"cell must be between 0.05 and 30 degrees, got {cell_degrees}")
    data = collect(shards)
    if data["samples"] == 0:
        raise ValueError(f"no readable samples in {shards!r}")
    out = Path(out_dir)
    lat, lon = data["lat"], data["lon"]
    world = density_panel(lat, lon, (-180, -90, 180, 90), cell_degrees, 4.0, f"{lat.size} located samples")
    panels = [world]
    if lat.size:
        box, cell = _extent(lat, lon)
        zoom = density_panel(lat, lon, box, cell, 900 / max(box[2] - box[0], box[3] - box[1]), "extent of the data")
        panels.append(zoom)
    figure = PIL.Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), BACKGROUND)
    x = 0
    for panel in panels:
        figure.paste(panel, (x, 0))
        x += panel.width
    save_png(figure, out / "world_density.png")

    levels = sorted(data["levels"])
    sources = data["sources"].most_common(20)
    charts = [
        bar_chart(
            "ground resolution, metres per pixel (from the zoom level)",
            [_metres(v) for v in levels],
            [data["levels"][v] for v in levels],
        ),
        bar_chart("quality score", *_binned(data["quality"], 0.25)),
        bar_chart("caption length (words)", *_binned(data["words"], 2, lo=0)),
        bar_chart("source", [s for s, _ in sources], [n for _, n in sources]),
    ]
    hist = PIL.Image.new("RGB", (2 * charts[0].width, 2 * charts[0].height), (255, 255, 255))
    for i, chart in enumerate(charts):
        hist.paste(chart, ((i % 2) * chart.width, (i // 2) * chart.height))
    save_png(hist, out / "histograms.png")

    summary = {
        "shards": data["shards"],
        "samples": data["samples"],
        "skipped": data["skipped"],
        "damaged_shards": data["damaged_shards"],
        "lost_samples": data["lost_samples"],  # in the damaged shards; a lower bound unless lost_exact
        "lost_exact": data["lost_exact"],
        "located": int(lat.size),
        "bounds": None
        if lat.size == 0
        else {"lat": [float(lat.min()), float(lat.max())], "lon": [float(lon.min()), float(lon.max())]},
        "level": {f"{k:g}": v for k, v in sorted(data["levels"].items())},
        "source": dict(data["sources"].most_common()),
        "modality": dict(data["modalities"].most_common()),
        "quality": _describe(data["quality"]),
        "caption_words": _describe(data["words"]),
        "files": ["world_density.png", "histograms.png", "stats.json"],
    }
    write_atomic(out / "stats.json", json.dumps(summary, indent=2).encode("utf-8"))
    return summary
