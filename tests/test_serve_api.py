"""`text2earth serve`'s HTTP API on the shipped demo model (in-process server, 2 sampling steps): the work,
the queue limit, cancellation, bad input, upload and download guards, the base map, and restarts."""

from __future__ import annotations

import base64
import http.client
import io
import json
import struct
import threading
import time
import zlib

import numpy as np
import PIL.Image
import pytest

from text2earth.apps.serve import server as server_module
from text2earth.apps.serve.engine import Settings
from text2earth.apps.serve.scenes import SceneStore
from text2earth.apps.serve.server import build_app, make_server
from text2earth.core.paths import shipped
from text2earth.core.webmercator import pixel_size_m


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve")
    settings = Settings(str(shipped("demo")), None, steps=2, guidance=4.0, overlap=None, feather=4, device="cpu")
    app = build_app(settings, out, queue_size=1, basemap_url=None, outlines={"x": [(-76, 37), (-75, 37), (-75, 38)]})
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield app, server.server_address[1], out
    server.shutdown()
    server.server_close()


def request(port, method, path, body=None, raw=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    kind = response.getheader("Content-Type", "")
    return response.status, json.loads(payload) if kind == "application/json" else payload


def wait(port, job):
    for _ in range(600):
        status, job = request(port, "GET", f"/api/jobs/{job['id']}")
        assert status == 200
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job did not finish: {job}")


def png_data_url(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def scene(served):
    _, port, _ = served
    status, job = request(
        port, "POST", "/api/generate", {"prompt": "farmland", "level": 12, "lat": 37.67, "lon": -75.62}
    )
    assert status == 202 and job["state"] in ("queued", "running")
    job = wait(port, job)
    assert job["state"] == "done", job
    return request(port, "GET", f"/api/scenes/{job['scene_id']}")[1]


def test_generated_scene_sits_where_asked(scene):
    assert (scene["width"], scene["height"], scene["level"]) == (64, 64, 12)
    b = scene["bounds"]
    assert (b["south"] + b["north"]) / 2 == pytest.approx(37.67, abs=0.02) and b["west"] < -75.62 < b["east"]
    assert scene["pixel_size_m"] == pytest.approx(pixel_size_m(12))
    assert scene["ground_size_m"] == pytest.approx(pixel_size_m(12) * np.cos(np.radians(37.67)), rel=1e-3)
    assert scene["nominal_gsd_m"] == 32


def test_edit_keeps_pixels_outside_the_mask_and_grow_adds_a_tile(served, scene):
    app, port, _ = served
    before = app.store.image(app.store.get(scene["id"]))
    mask = np.zeros((64, 64), np.uint8)
    mask[8:40, 8:40] = 255
    body = {"scene_id": scene["id"], "prompt": "a lake", "mask": png_data_url(mask), "seed": 3}
    job = wait(port, request(port, "POST", "/api/edit", body)[1])
    assert job["state"] == "done", job
    after = app.store.image(app.store.get(scene["id"]))
    assert np.array_equal(after[48:], before[48:]) and not np.array_equal(after[8:40, 8:40], before[8:40, 8:40])

    job = wait(port, request(port, "POST", "/api/extend", {"scene_id": scene["id"], "direction": "west"})[1])
    assert job["state"] == "done", job
    grown = request(port, "GET", f"/api/scenes/{scene['id']}")[1]
    assert (grown["width"], grown["height"], grown["version"]) == (128, 64, 3)
    assert grown["bounds"]["east"] == pytest.approx(scene["bounds"]["east"])  # grown westwards: east edge stays
    assert grown["bounds"]["west"] < scene["bounds"]["west"]
    image = app.store.image(app.store.get(scene["id"]))
    assert np.array_equal(image[:, 64 + 8 :], after[:, 8:])  # the old scene, beyond the feather, is kept exactly
    assert [h["op"] for h in grown["history"]] == ["generate", "edit", "extend"]

    # A restart (a new store on the same folder) finds the finished scene as it was, even after a save that
    # crashed before its commit (a half-written next version is ignored).
    folder = app.store.root / scene["id"]
    (folder / "v4").mkdir()
    PIL.Image.new("RGB", (8, 8)).save(folder / "v4" / "scene.png")
    restarted = SceneStore(app.store.root.parent, geo=app.geo)
    again = restarted.get(scene["id"])
    assert (again.version, again.width) == (3, 128) and restarted.image(again).shape == (64, 128, 3)
    assert sorted(p.name for p in folder.glob("v*")) == ["v3", "v4"]  # v1 and v2 were removed after v3 committed


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/api/generate", {"prompt": "", "level": 12, "lat": 0, "lon": 0}, "give a prompt"),
        ("/api/generate", {"prompt": "x", "level": 0, "lat": 0, "lon": 0}, "level 0"),
        ("/api/generate", {"prompt": "x", "level": 30, "lat": 0, "lon": 0}, "level must lie"),
        ("/api/generate", {"prompt": "x", "level": 12, "lat": 95, "lon": 0}, "latitude"),
        ("/api/generate", {"prompt": "x", "level": 12, "lat": "north", "lon": 0}, "lat must be a number"),
        ("/api/generate", [1, 2], "JSON object"),
        ("/api/extend", {"scene_id": "0123456789ab", "direction": "east"}, "no scene"),
    ],
)
def test_bad_input_gets_a_4xx_json_message(served, path, body, needle):
    _, port, _ = served
    status, payload = request(port, "POST", path, body)
    assert 400 <= status < 500 and needle in payload["error"]


def test_bad_masks_and_directions(served, scene):
    _, port, _ = served
    sid = scene["id"]
    status, payload = request(port, "POST", "/api/extend", {"scene_id": sid, "direction": "up"})
    assert status == 400 and "direction" in payload["error"]
    wrong = {"scene_id": sid, "prompt": "x", "mask": png_data_url(np.full((8, 8), 255, np.uint8))}
    status, payload = request(port, "POST", "/api/edit", wrong)
    assert status == 400 and "mask is 8x8" in payload["error"]
    empty = {"scene_id": sid, "prompt": "x", "mask": png_data_url(np.zeros((64, 128), np.uint8))}
    status, payload = request(port, "POST", "/api/edit", empty)
    assert status == 400 and "empty" in payload["error"]
    # A decompression bomb: a tiny PNG whose header claims 100000 x 100000 pixels is refused unread.
    buffer = io.BytesIO()
    PIL.Image.new("L", (1, 1)).save(buffer, format="PNG")
    png = bytearray(buffer.getvalue())
    ihdr = b"IHDR" + struct.pack(">II", 100_000, 100_000) + bytes(png[24:29])
    png[12:33] = ihdr + struct.pack(">I", zlib.crc32(ihdr))
    bomb = {"scene_id": sid, "prompt": "x", "mask": "data:image/png;base64," + base64.b64encode(bytes(png)).decode()}
    status, payload = request(port, "POST", "/api/edit", bomb)
    assert status == 400 and "mask" in payload["error"]


def test_body_over_the_limit_is_413(served, monkeypatch):
    _, port, _ = served
    monkeypatch.setattr(server_module, "MAX_BODY", 1000)
    status, payload = request(port, "POST", "/api/generate", raw=b"{" + b" " * 2000 + b"}")
    assert status == 413 and "1000 bytes" in payload["error"]


def test_full_queue_is_429_and_jobs_can_be_cancelled(served):
    app, port, _ = served
    body = {"prompt": "x", "level": 12, "lat": 10, "lon": 10}
    with app.engine._lock:  # the worker blocks in its first job: the queue (size 1) fills up
        status, running = request(port, "POST", "/api/generate", body)
        assert status == 202
        for _ in range(100):
            if request(port, "GET", f"/api/jobs/{running['id']}")[1]["state"] == "running":
                break
            time.sleep(0.02)
        status, queued = request(port, "POST", "/api/generate", body)
        assert status == 202
        status, payload = request(port, "POST", "/api/generate", body)
        assert status == 429 and "queue is full" in payload["error"]
        assert request(port, "DELETE", f"/api/jobs/{queued['id']}")[1]["state"] == "cancelled"
        assert request(port, "DELETE", f"/api/jobs/{running['id']}")[0] == 200
    assert wait(port, running)["state"] == "cancelled"  # stopped at its first sampling step
    assert wait(port, queued)["state"] == "cancelled"
    assert request(port, "GET", "/api/jobs/0123456789abcdef")[0] == 404


def test_downloads_stay_inside_the_scene_folder(served, scene):
    app, port, out = served
    (out / "secret.txt").write_text("no")
    sid = scene["id"]
    for path in (
        f"/api/scenes/{sid}/files/../../secret.txt",
        f"/api/scenes/{sid}/files/..%2F..%2Fsecret.txt",
        f"/api/scenes/{sid}/files/run.log",
        "/api/scenes/..%2F..%2Fsecret.txt/files/scene.png",
        "/static/../server.py",
        "/static/..%2Fserver.py",
    ):
        status, payload = request(port, "GET", path)
        assert status == 404, path
    status, payload = request(port, "GET", f"/api/scenes/{sid}/files/scene.png")
    assert status == 200 and payload[:8] == b"\x89PNG\r\n\x1a\n"
    if app.geo:
        status, item = request(port, "GET", f"/api/scenes/{sid}/files/scene.stac.json")
        assert status == 200 and item["properties"]["proj:epsg"] == 3857


def test_openapi_and_basemap(served):
    _, port, _ = served
    status, spec = request(port, "GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert {"/api/generate", "/api/edit", "/api/extend", "/api/jobs/{job_id}"} <= set(spec["paths"])
    assert "429" in spec["paths"]["/api/generate"]["post"]["responses"]
    status, tile = request(port, "GET", "/api/basemap/3/2/3.png")  # the Atlantic and the Americas
    colours = {tuple(c) for c in np.asarray(PIL.Image.open(io.BytesIO(tile))).reshape(-1, 3)}
    assert status == 200 and {(170, 200, 224), (226, 222, 205), (230, 120, 20)} <= colours
    assert request(port, "GET", "/api/basemap/3/8/0.png")[0] == 400
    status, page = request(port, "GET", "/")
    assert status == 200 and b"leaflet.js" in page


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--model", "no/such-model"], "never downloads"),
        (["--model", str(shipped("demo")), "--port", "70000"], "--port must lie"),
        (["--model", str(shipped("demo")), "--steps", "0"], "--steps must be at least 1"),
    ],
)
def test_serve_cli_refuses_bad_settings_in_one_line(flags, needle, capsys):
    from text2earth.cli.main import main as cli_main

    assert cli_main(["serve", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_a_bad_overlap_fails_at_start(tmp_path):
    settings = Settings(str(shipped("demo")), None, steps=2, guidance=4.0, overlap=10, feather=4, device="cpu")
    with pytest.raises(ValueError, match="overlap must be a non-negative multiple of 4"):
        build_app(settings, tmp_path, queue_size=1, basemap_url=None, outlines={})


def test_an_inpainting_model_folder_serves_edits(tmp_path):
    import dataclasses

    from text2earth.apps.serve.jobs import Job
    from text2earth.models.components import load_from_folder, save_folder
    from text2earth.models.inpainting import inpainting_unet_from

    parts = load_from_folder(shipped("demo"))
    folder = save_folder(dataclasses.replace(parts, unet=inpainting_unet_from(parts.unet)), tmp_path / "inpaint")
    settings = Settings(str(shipped("demo")), str(folder), steps=1, guidance=4.0, overlap=None, feather=4, device="cpu")
    app = build_app(settings, tmp_path / "out", queue_size=1, basemap_url=None, outlines={})
    assert app.config()["inpaint_model"] == str(folder) and app.engine.pipelines()[1].unet.config.in_channels == 9
    scene_id = app.engine.run(
        Job("g", "generate", app.engine.check_generate({"prompt": "x", "level": 12, "lat": 1, "lon": 1}))
    )
    mask = np.zeros((64, 64), np.uint8)
    mask[:32] = 255
    edit = app.engine.check_edit({"scene_id": scene_id, "prompt": "y", "mask": png_data_url(mask)})
    before = app.store.image(app.store.get(scene_id))
    assert app.engine.run(Job("e", "edit", edit)) == scene_id
    after = app.store.image(app.store.get(scene_id))
    assert np.array_equal(after[40:], before[40:]) and app.store.get(scene_id).version == 2
