"""Paired-sample shards for image-to-image translation, and single-modality shards for LoRA, from the
embedded real tiles (``data_modules/embedded``).

A pair sample is ``{key}.png`` (the target, 8-bit; single-band targets as greyscale PNG), ``{key}.cond.png``
(the condition, same size), ``{key}.txt`` (the tile's caption) and ``{key}.json`` (the tile's metadata plus
``task``, ``modality`` (of the target), ``cond_modality`` and how the condition was made). Greyscale PNGs
decode to three equal channels, which is how the RGB VAE and the ControlNet see single bands.

Real co-registered pairs: the embedded tiles carry the measured Landsat-8 PAN (15 m native; 30 / 60 m area
means) and NIR (Sentinel-2 B08, Landsat-8 B5) at the tile's own gsd, on the RGB tile's pixel grid. The 16-bit
raw DN are stretched to 8 bit with one fixed linear stretch per (source, band): the 1st..99th percentile of the
training tiles (recorded in ``pairs.json``; :mod:`text2earth.io.bands` documents the scaling).

Synthetic conditions on real targets: ``sr_x2`` / ``sr_x4`` (area-mean downsampling, bicubic back to tile
size: the condition is the low-resolution image, the level is the finer target's), ``dehaze``
(:mod:`text2earth.core.haze`, random transmission / airlight per tile). There is no SAR in the embedded data:
``sar2rgb`` uses a stand-in condition (the NIR band with 4-look gamma speckle), which exercises the SAR code
path but is not SAR.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
import webdataset as wds
from tqdm.auto import tqdm

from data_modules.embedded import ensure_embedded
from data_modules.webdataset_datamodule import ShardDataModule
from text2earth.core.haze import add_haze, random_haze
from text2earth.enhance.degradations import resize
from text2earth.io.bands import TASKS, band_from_array, check_task
from text2earth.io.files import atomic_directory
from text2earth.io.images import decode_rgb, encode_png, to_uint8, to_unit_float
from text2earth.io.shards import expand_shards, read_shard_samples

MODALITY_SETS = ("nir", "pan", "sar")  # single-modality shards for the text-to-X LoRAs
PERCENTILES = (1.0, 99.0)
SPECKLE_LOOKS = 4


def _dn(data: bytes) -> np.ndarray:
    with PIL.Image.open(io.BytesIO(data)) as image:
        return np.asarray(image).astype(np.uint16)


def measure_stretch(urls: list[str]) -> dict[str, dict[str, list[float]]]:
    """``{source: {band: [lo, hi]}}``: percentiles of the raw DN of every tile in ``urls`` (the training tiles)."""
    values: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    for url in urls:
        for sample in read_shard_samples(url):
            meta = json.loads(sample["json"])
            for band in ("nir", "pan"):
                if f"{band}.png" in sample:
                    values[meta["source"], band].append(_dn(sample[f"{band}.png"]).ravel()[::7])
    stretch: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for (source, band), chunks in sorted(values.items()):
        lo, hi = np.percentile(np.concatenate(chunks), PERCENTILES)
        stretch[source][band] = [float(lo), float(hi)]
    return dict(stretch)


def speckle(band: np.ndarray, rng: np.random.Generator, looks: int = SPECKLE_LOOKS) -> np.ndarray:
    """Multiplicative gamma speckle of an ``looks``-look intensity image (mean 1), as in SAR."""
    return band * rng.gamma(looks, 1.0 / looks, size=band.shape).astype(np.float32)


def _downup(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Area-mean downsampling by ``factor``, bicubic back: the low-resolution condition at target size."""
    x = torch.from_numpy(rgb).permute(2, 0, 1)
    h, w = x.shape[-2:]
    low = resize(x, (h // factor, w // factor), "area")
    up = torch.nn.functional.interpolate(low[None], size=(h, w), mode="bicubic", align_corners=False)[0]
    return up.clamp(0, 1).permute(1, 2, 0).numpy()


def make_condition(
    task: str, sample: dict[str, Any], meta: dict[str, Any], stretch: dict[str, dict[str, list[float]]], seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """``(condition, target, extra metadata)`` as uint8 arrays for one embedded tile, or None if it lacks a band."""
    cond_name, target_name = TASKS[task]
    rng = np.random.default_rng([seed, *sample["__key__"].encode()])  # per tile, stable across runs

    def band(name: str) -> np.ndarray | None:
        if f"{name}.png" not in sample:
            return None
        return band_from_array(_dn(sample[f"{name}.png"]), tuple(stretch[meta["source"]][name]))

    extra: dict[str, Any] = {}
    rgb = to_unit_float(decode_rgb(sample["png"]))
    if target_name == "rgb":
        target = to_uint8(rgb)
    else:
        target_band = band(target_name)
        if target_band is None:
            return None
        target = to_uint8(target_band)
    if cond_name in ("pan", "nir"):
        cond_band = band(cond_name)
        if cond_band is None:
            return None
        cond = to_uint8(cond_band)
        extra["cond_dn_range"] = stretch[meta["source"]][cond_name]
    elif cond_name == "sar":
        nir = band("nir")
        if nir is None:
            return None
        cond = to_uint8(speckle(nir, rng))
        extra["cond_made_by"] = f"stand-in, not SAR: NIR with {SPECKLE_LOOKS}-look gamma speckle"
    elif task.startswith("sr_x"):
        factor = int(task[len("sr_x") :])
        cond = to_uint8(_downup(rgb, factor))
        extra["cond_made_by"] = f"area mean /{factor}, bicubic x{factor}"
        extra["scale"] = factor
    else:  # dehaze
        haze = random_haze(rng)
        cond = to_uint8(add_haze(rgb, haze))
        extra["haze"] = {"transmission": haze.transmission, "airlight": haze.airlight}
    return cond, target, extra


def _pair_samples(
    task: str, urls: list[str], stretch: dict[str, dict[str, list[float]]], seed: int
) -> Iterator[dict[str, Any]]:
    cond_name, target_name = TASKS[task]
    for url in urls:
        for sample in read_shard_samples(url):
            meta = json.loads(sample["json"])
            made = make_condition(task, sample, meta, stretch, seed)
            if made is None:
                continue
            cond, target, extra = made
            meta.update(task=task, modality=target_name, cond_modality=cond_name, **extra)
            yield {
                "__key__": sample["__key__"],
                "png": encode_png(target),
                "cond.png": encode_png(cond),
                "txt": sample["txt"],
                "json": json.dumps(meta).encode(),
            }


def _modality_samples(
    modality: str, urls: list[str], stretch: dict[str, dict[str, list[float]]], seed: int
) -> Iterator[dict[str, Any]]:
    """Every tile that has ``modality`` (the condition of its ``*2rgb`` task) as a text-to-X LoRA sample."""
    for pair in _pair_samples(f"{modality}2rgb", urls, stretch, seed):
        meta = json.loads(pair["json"])
        for k in ("task", "cond_modality", "cond_dn_range"):
            meta.pop(k, None)
        meta["modality"] = modality
        yield {
            "__key__": pair["__key__"],
            "png": pair["cond.png"],
            "txt": pair["txt"],
            "json": json.dumps(meta).encode(),
        }


def _write(
    folder: Path, split: str, samples: Iterator[dict[str, Any]], per_shard: int, desc: str, limit: int | None
) -> int:
    n = 0
    with wds.ShardWriter(str(folder / f"{split}-%06d.tar"), maxcount=per_shard, verbose=0, mtime=0.0) as writer:
        for sample in tqdm(samples, desc=desc, unit="tile", leave=False):
            if limit is not None and n >= limit:
                break
            writer.write(sample)
            n += 1
    return n


def set_names(tasks: list[str] | None = None, modalities: list[str] | None = None) -> list[str]:
    """Folder names of the sets: each task, and ``modality_{m}`` for each single-band modality."""
    tasks = [check_task(t) for t in (tasks if tasks is not None else TASKS)]
    modalities = list(modalities if modalities is not None else MODALITY_SETS)
    for m in modalities:
        if m not in MODALITY_SETS:
            raise ValueError(f"unknown single-band modality {m!r}; known: {', '.join(MODALITY_SETS)}")
    return tasks + [f"modality_{m}" for m in modalities]


def check_set(name: str) -> str:
    """A set name (a task, or ``modality_{m}``) checked; one-line ``ValueError`` otherwise."""
    if name.startswith("modality_"):
        set_names([], [name.removeprefix("modality_")])
    else:
        check_task(name)
    return name


def build_pair_shards(
    embedded: str | Path,
    out_dir: str | Path,
    names: list[str] | None = None,
    seed: int = 0,
    per_shard: int = 400,
    max_per_split: int | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/{name}/{train,val}-*.tar`` and ``out_dir/{name}/pairs.json`` for each set name
    (a task or ``modality_{m}``; default all); each set folder appears whole or not at all.
    ``max_per_split`` keeps only the first samples of each split (quick builds for tests)."""
    names = names if names is not None else set_names()
    urls = {s: expand_shards(f"{embedded}/{s}-*.tar", split=s) for s in ("train", "val")}
    stretch = measure_stretch(urls["train"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports = {}
    for name in tqdm(names, desc="pair shards", unit="set"):
        if check_set(name).startswith("modality_"):
            modality = name.removeprefix("modality_")
            make = lambda u, m=modality: _modality_samples(m, u, stretch, seed)  # noqa: E731
            what = {"modality": modality}
        else:
            make = lambda u, t=name: _pair_samples(t, u, stretch, seed)  # noqa: E731
            what = {"task": name, "condition": TASKS[name][0], "target": TASKS[name][1]}
        with atomic_directory(out / name) as tmp:
            tmp.mkdir(parents=True)
            counts = {
                s: _write(tmp, s, make(urls[s]), per_shard, f"{name} {s}", max_per_split) for s in ("train", "val")
            }
            reports[name] = {
                **what,
                "counts": counts,
                "embedded": str(embedded),
                "seed": seed,
                "stretch_dn": stretch,
                "stretch_percentiles": list(PERCENTILES),
            }
            if "sar" in name:
                reports[name]["note"] = (
                    f"no real SAR in the embedded data: the condition is NIR with {SPECKLE_LOOKS}-look gamma speckle"
                )
            (tmp / "pairs.json").write_text(json.dumps(reports[name], indent=2))
    return reports


class PairShardDataModule(ShardDataModule):
    """``ShardDataModule`` over one set of ``data/pairs`` (a task, or ``modality_{m}``), built when missing."""

    def __init__(self, pair_set: str, pairs_dir: str, embedded_dir: str, **kwargs: Any) -> None:
        folder = Path(pairs_dir) / check_set(pair_set)
        super().__init__(train_shards=f"{folder}/train-*.tar", val_shards=f"{folder}/val-*.tar", **kwargs)
        self.pair_set, self.pairs_dir, self.embedded_dir = pair_set, pairs_dir, embedded_dir

    def prepare_data(self) -> None:
        if (Path(self.pairs_dir) / self.pair_set / "pairs.json").is_file():
            return
        ensure_embedded(self.embedded_dir)
        build_pair_shards(self.embedded_dir, self.pairs_dir, [self.pair_set])
