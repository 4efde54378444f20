"""Georeferenced outputs: Web-Mercator placement against morecantile, COG + STAC from the CLI, bad input."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from text2earth.cli.main import main as cli_main
from text2earth.core.errors import UserError
from text2earth.core.paths import shipped
from text2earth.core.resolution import gsd_to_level
from text2earth.core.webmercator import (
    Location,
    ground_size_m,
    parse_at,
    parse_tile,
    pixel_size_m,
    place_at,
    place_on_tile,
)

morecantile = pytest.importorskip("morecantile")
rasterio = pytest.importorskip("rasterio")
TMS = morecantile.tms.get("WebMercatorQuad")
DEMO = str(shipped("demo"))
TILE = (17, 66384, 45091)  # Paris, Champ de Mars


def test_pixel_size_is_the_web_mercator_one():
    assert pixel_size_m(17) == pytest.approx(1.19432856)
    assert pixel_size_m(16.5) == pytest.approx(pixel_size_m(17) * math.sqrt(2))  # fractional levels scale smoothly
    assert ground_size_m(17, 60.0) == pytest.approx(pixel_size_m(17) / 2)


@pytest.mark.parametrize(
    ("tile", "level", "size"), [((17, 66384, 45091), 17, 256), ((3, 7, 0), 1, 64), ((5, 0, 31), 5, 256)]
)
def test_tile_placement_equals_the_library_tile_bounds(tile, level, size):
    z, x, y = tile
    expected = TMS.xy_bounds(morecantile.Tile(x, y, z))
    got = place_on_tile(tile, level, size, size)
    np.testing.assert_allclose(got.bounds_xy, tuple(expected), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.bounds_lonlat, tuple(TMS.bounds(morecantile.Tile(x, y, z))), atol=1e-9)


def test_point_placement_puts_the_point_at_the_centre():
    lat, lon = 48.8556, 2.2986
    placement = place_at(lat, lon, 16.3, 64, 48)
    np.testing.assert_allclose(placement.centre_lonlat, (lon, lat), atol=1e-9)
    x, y = TMS.xy(lon, lat)
    left, bottom, right, top = placement.bounds_xy
    assert (left + right) / 2 == pytest.approx(x, abs=1e-6) and (bottom + top) / 2 == pytest.approx(y, abs=1e-6)


@pytest.mark.parametrize(
    ("text", "needle"),
    [("91,0", "latitude"), ("85.1,0", "latitude"), ("0,180.5", "longitude"), ("nan,0", "latitude"), ("1;2", "LAT,LON")],
)
def test_bad_points(text, needle):
    with pytest.raises(UserError, match=needle):
        parse_at(text)


@pytest.mark.parametrize(
    ("text", "needle"),
    [("3/8/0", "does not exist"), ("3/0/8", "does not exist"), ("0/0/0", "zoom"), ("17/1/x", "Z/X/Y")],
)
def test_bad_tiles(text, needle):
    with pytest.raises(UserError, match=needle):
        parse_tile(text)


def test_an_image_across_the_antimeridian_is_refused():
    with pytest.raises(UserError, match="edge of the Web-Mercator world"):
        Location(at=(0.0, 179.9999)).place(10, 64, 64)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--at", "95,10", "--level", "15"], "latitude must lie"),
        (["--at", "10,-190", "--level", "15"], "longitude must lie"),
        (["--tile", "4/16/3"], "does not exist: at zoom 4"),
        (["--at", "10,10"], "give --level or --gsd"),
    ],
)
def test_cli_refuses_bad_locations_before_loading(flags, needle, tmp_path, capsys):
    # A model folder that does not exist: the location check must come first (before any slow work).
    argv = ["generate", "fields", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o"), *flags]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_missing_geo_extra_names_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "rio_cogeo", None)  # makes `import rio_cogeo` raise ImportError
    argv = ["generate", "fields", "--model", DEMO, "--out", str(tmp_path / "o"), "--tile", "17/1/1"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "text2earth[geo]" in err and "rio_cogeo" in err and not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The demo model (64 px) on tile 17/X/Y at level 15: 64 px of level 15 cover that zoom-17 tile exactly."""
    root = tmp_path_factory.mktemp("geo")
    z, x, y = TILE
    common = ["--model", DEMO, "--n", "1", "--steps", "2", "--device", "cpu"]
    assert (
        cli_main(["generate", "a park", *common, "--level", "15", "--tile", f"{z}/{x}/{y}", "--out", str(root / "t")])
        == 0
    )
    assert (
        cli_main(["generate", "a park", *common, "--gsd", "10", "--at", "48.8556,2.2986", "--out", str(root / "a")])
        == 0
    )
    return root


def test_generate_on_a_tile_writes_a_valid_cog_on_the_tile(generated):
    from rio_cogeo.cogeo import cog_validate

    tif = generated / "t" / "000_L15_seed0.tif"
    valid, errors, _ = cog_validate(str(tif), quiet=True)
    assert valid, errors
    z, x, y = TILE
    with rasterio.open(tif) as src:
        assert src.crs.to_epsg() == 3857 and (src.width, src.height, src.count) == (64, 64, 3)
        assert src.transform.a == pytest.approx(pixel_size_m(15)) and src.transform.e == pytest.approx(
            -pixel_size_m(15)
        )
        np.testing.assert_allclose(tuple(src.bounds), tuple(TMS.xy_bounds(morecantile.Tile(x, y, z))), atol=1e-6)
        pixels = src.read()
    png = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(tif.with_suffix(".png")))
    np.testing.assert_array_equal(np.moveaxis(pixels, 0, -1), png)


def test_stac_item_describes_the_output(generated):
    item = json.loads((generated / "t" / "000_L15_seed0.stac.json").read_text())
    z, x, y = TILE
    np.testing.assert_allclose(item["bbox"], tuple(TMS.bounds(morecantile.Tile(x, y, z))), atol=1e-9)
    props = item["properties"]
    assert item["type"] == "Feature" and item["stac_version"] == "1.0.0"
    assert any("projection" in ext for ext in item["stac_extensions"]) and props["proj:epsg"] == 3857
    assert props["proj:shape"] == [64, 64] and props["text2earth:prompt"] == "a park"
    assert props["text2earth:level"] == 15 and props["text2earth:seed"] == 0
    assert props["text2earth:nominal_gsd_m"] == 4 and props["text2earth:model"] == DEMO
    lat = (item["bbox"][1] + item["bbox"][3]) / 2
    assert props["gsd"] == pytest.approx(pixel_size_m(15) * math.cos(math.radians(lat)), rel=1e-4)
    assert item["assets"]["image"]["href"] == "./000_L15_seed0.tif"
    ring = item["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5


def test_generate_at_a_point_centres_it(generated):
    tif = generated / "a" / "000_L13.6781_seed0.tif"
    lat, lon = 48.8556, 2.2986
    x, y = TMS.xy(lon, lat)
    with rasterio.open(tif) as src:
        col, row = ~src.transform @ (x, y)
        # the exact level of --gsd 10, not the 6 digits the PNG's text keeps
        assert src.transform.a == pytest.approx(pixel_size_m(gsd_to_level(10)), rel=1e-12)
        assert (col, row) == pytest.approx((src.width / 2, src.height / 2), abs=1e-6)
        assert src.index(x + 1e-3, y - 1e-3) == (src.height // 2, src.width // 2)  # the centre pixel


def test_translate_writes_its_single_band_tif_as_the_cog(tmp_path):
    from rio_cogeo.cogeo import cog_validate

    pan = np.random.default_rng(0).integers(1000, 20000, (64, 64), dtype=np.uint16)
    __import__("PIL.Image", fromlist=["Image"]).fromarray(pan).save(tmp_path / "pan.png")
    out = tmp_path / "nir.tif"
    argv = ["translate", str(tmp_path / "pan.png"), "--task", "pan2nir", "--out", str(out), "--bits", "16"]
    assert cli_main([*argv, "--steps", "1", "--gsd", "10", "--at", "37.67,-75.62", "--device", "cpu"]) == 0
    assert cog_validate(str(out), quiet=True)[0]
    with rasterio.open(out) as src:
        assert (src.count, src.dtypes[0], src.crs.to_epsg()) == (1, "uint16", 3857)
    item = json.loads((tmp_path / "nir.stac.json").read_text())
    assert item["properties"]["text2earth:model"] == "pan2nir" and item["assets"]["image"]["href"] == "./nir.tif"
