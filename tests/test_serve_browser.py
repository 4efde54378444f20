"""`text2earth serve` in a real browser: headless Chromium (Debian's package) driven by Playwright clicks
through generate -> edit -> grow -> download against a server this test starts on the shipped demo model.

Skipped when Chromium or Playwright is missing, except under CI (``CI`` set), where that is a failure.
``T2E_WRITE_DOCS=1`` saves the screenshot to docs/images/serve.png (the README's picture).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from text2earth.core.paths import shipped

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = ROOT / "docs" / "images" / "serve.png"


def _browser_or_skip():
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package is not installed (make install adds it with the [dev] extra)"
    if missing is None and not Path(CHROMIUM).exists():
        missing = "Debian's chromium is not installed (apt-get install chromium; .ci/run does it)"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run under CI: {missing}")
        pytest.skip(missing)
    return sync_playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "text2earth.cli.main", "serve", "--model", str(shipped("demo"))]
    argv += ["--port", "0", "--out", str(out), "--steps", "4", "--device", "cpu"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    try:
        line = proc.stdout.readline()  # printed once the models are loaded and the port is bound
        assert line.startswith("text2earth serve: http://"), line
        yield line.split()[2].rstrip("/"), out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_generate_edit_grow_download_in_chromium(server, tmp_path):
    sync_playwright = _browser_or_skip()
    url, out = server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")

        # Bad input gets a readable message on the page (and no job).
        page.fill("#prompt", "")
        page.click("#map", position={"x": 450, "y": 450})
        page.wait_for_function("document.getElementById('error').textContent.includes('give a prompt')")

        # Generate: the level slider shows gsd and ground size; a click places the tile there at that scale.
        page.fill("#prompt", "a patchwork of farmland fields")
        page.eval_on_selector("#level", "el => { el.value = '10'; el.dispatchEvent(new Event('input')); }")
        assert "nominal gsd 128 m/px" in page.inner_text("#level-info")
        assert "on the ground" in page.inner_text("#level-info")
        page.click("#map", position={"x": 450, "y": 450})
        page.wait_for_function("document.getElementById('status').textContent === 'generate: done'")
        info = page.inner_text("#scene-info")
        assert "64 × 64 px at L10" in info and "version 1" in info
        overlay = page.locator("#map img.leaflet-image-layer")
        assert overlay.count() == 1
        box = overlay.bounding_box()
        # L10 pixels shown at map zoom 11: a 64-px tile is 128 screen pixels wide, centred on the click.
        assert box["width"] == pytest.approx(128, abs=1) and box["x"] + box["width"] / 2 == pytest.approx(
            300 + 450, abs=2
        )

        # Edit: paint a stroke on the scene, repaint it from a prompt; the tile is replaced (version 2).
        canvas = page.locator("#mask-canvas").bounding_box()
        page.mouse.move(canvas["x"] + 60, canvas["y"] + 60)
        page.mouse.down()
        page.mouse.move(canvas["x"] + 180, canvas["y"] + 160, steps=8)
        page.mouse.up()
        page.fill("#edit-prompt", "a lake")
        page.click("#edit")
        page.wait_for_function("document.getElementById('status').textContent === 'edit: done'")
        assert "version 2" in page.inner_text("#scene-info")

        # Grow eastwards by one tile at the same level.
        page.click("#extend-east")
        page.wait_for_function("document.getElementById('status').textContent === 'extend: done'")
        assert "128 × 64 px at L10" in page.inner_text("#scene-info")
        assert page.locator("#map img.leaflet-image-layer").bounding_box()["width"] == pytest.approx(256, abs=1)
        page.wait_for_timeout(300)  # the replaced overlay image loads
        page.eval_on_selector("#panel", "el => { el.scrollTop = 0; }")
        page.screenshot(path=str(tmp_path / "serve.png"))
        if os.environ.get("T2E_WRITE_DOCS"):
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_path / "serve.png", SCREENSHOT)

        files = {}
        for name in ("scene-png", "scene-tif", "scene-stac-json"):
            with page.expect_download() as download:
                page.click(f"#download-{name}")
            files[name] = tmp_path / download.value.suggested_filename
            download.value.save_as(files[name])
        browser.close()

    png = PIL.Image.open(files["scene-png"])
    assert png.size == (128, 64) and png.mode == "RGB"
    rasterio = pytest.importorskip("rasterio")
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(str(files["scene-tif"]), quiet=True)[0]
    with rasterio.open(files["scene-tif"]) as tif:
        assert tif.crs.to_epsg() == 3857 and (tif.width, tif.height) == (128, 64)
        np.testing.assert_array_equal(np.moveaxis(tif.read(), 0, -1), np.asarray(png))
        bounds = tif.bounds
    item = json.loads(files["scene-stac-json"].read_text())
    assert item["properties"]["proj:bbox"] == pytest.approx(list(bounds))
    assert item["properties"]["text2earth:prompt"] == "a patchwork of farmland fields"
    # Everything finished is on disk for a restart.
    assert len(list((out / "scenes").glob("*/scene.json"))) == 1
