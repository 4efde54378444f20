"""``text2earth serve``: the HTTP server (standard library) over the job queue, the scene store and the page.

Bound to 127.0.0.1 unless told otherwise. Errors are JSON ``{"error": message}``: 400 for bad input,
404 for unknown scenes / jobs / files, 413 for a body over the limit, 429 when the queue is full.
"""

from __future__ import annotations

import json
import mimetypes
import re
import sys
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from text2earth.apps.serve.basemap import render_tile
from text2earth.apps.serve.engine import Engine, Settings
from text2earth.apps.serve.jobs import JobQueue, QueueFull
from text2earth.apps.serve.openapi import openapi_spec
from text2earth.apps.serve.scenes import NotFound, SceneStore
from text2earth.core.errors import USER_ERRORS
from text2earth.core.resolution import MAX_LEVEL
from text2earth.io.geo import geo_available

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 4 * 1024 * 1024  # a 512 x 512 mask as a PNG data URL is well under this
_BASEMAP = re.compile(r"^/api/basemap/(\d+)/(\d+)/(\d+)\.png$")
_JOB = re.compile(r"^/api/jobs/([0-9a-f]{16})$")
_SCENE = re.compile(r"^/api/scenes/([^/]+)$")
_FILE = re.compile(r"^/api/scenes/([^/]+)/files/([^/]+)$")


@dataclass
class App:
    engine: Engine
    store: SceneStore
    jobs: JobQueue
    basemap_url: str | None
    outlines: tuple[tuple[tuple[float, float], ...], ...]
    geo: bool

    def config(self) -> dict[str, Any]:
        return {
            "tile_px": self.engine.tile,
            "steps": self.engine.settings.steps,
            "levels": {"min": 1, "max": MAX_LEVEL, "default": 12},
            "geo": self.geo,
            "inpaint_model": self.engine.settings.inpaint_model,
            "basemap_url": self.basemap_url,
        }


def build_app(
    settings: Settings,
    out: str | Path,
    queue_size: int,
    basemap_url: str | None,
    outlines: dict[str, list[tuple[float, float]]],
) -> App:
    geo = geo_available()
    store = SceneStore(out, geo=geo)
    engine = Engine(settings, store)
    engine.pipelines()  # load now: the first request should not wait for the weights
    engine.overlap  # noqa: B018 (a bad --overlap fails here, in one line, not in the first grow)
    return App(
        engine=engine,
        store=store,
        jobs=JobQueue(engine.run, maxsize=queue_size),
        basemap_url=basemap_url,
        outlines=tuple(tuple(ring) for ring in outlines.values()),
        geo=geo,
    )


class Handler(BaseHTTPRequestHandler):
    app: App  # set on the subclass that serve() makes
    server_version = "text2earth"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        if not self.path.startswith(("/api/jobs/", "/api/basemap/")):  # polling would drown the log
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    # ------------------------------------------------------------------ responses
    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _guarded(self, handler: Any) -> None:
        try:
            handler()
        except NotFound as exc:
            self._error(HTTPStatus.NOT_FOUND, str(exc))
        except QueueFull as exc:
            self._error(HTTPStatus.TOO_MANY_REQUESTS, str(exc))
        except USER_ERRORS as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self._guarded(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    def do_DELETE(self) -> None:  # noqa: N802
        self._guarded(self._delete)

    def _get(self) -> None:
        app, path = self.app, urlsplit(self.path).path
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/") :])
        if path == "/openapi.json":
            return self._json(200, openapi_spec(MAX_BODY))
        if path == "/api/config":
            return self._json(200, app.config())
        if path == "/api/scenes":
            return self._json(200, [scene.describe(app.geo) for scene in app.store.list()])
        if match := _BASEMAP.match(path):
            z, x, y = (int(g) for g in match.groups())
            return self._send(200, render_tile(z, x, y, app.outlines), "image/png", {"Cache-Control": "max-age=3600"})
        if match := _JOB.match(path):
            return self._job(app.jobs.get(match.group(1)), match.group(1))
        if match := _SCENE.match(path):
            return self._json(200, app.store.get(match.group(1)).describe(app.geo))
        if match := _FILE.match(path):
            file = app.store.file(*match.groups())
            kind = "application/json" if file.suffix == ".json" else mimetypes.guess_type(file.name)[0] or "image/tiff"
            disposition = {"Content-Disposition": f'attachment; filename="{match.group(1)}-{file.name}"'}
            return self._send(200, file.read_bytes(), kind, disposition)
        raise NotFound(f"no such page: {path}")

    def _post(self) -> None:
        ops = {"/api/generate": "generate", "/api/edit": "edit", "/api/extend": "extend"}
        op = ops.get(urlsplit(self.path).path)
        if op is None:
            raise NotFound(f"no such endpoint: POST {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True  # the unread body must not be taken for the next request
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return self._error(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object")
        check = getattr(self.app.engine, f"check_{op}")
        job = self.app.jobs.submit(op, check(body))
        self._json(HTTPStatus.ACCEPTED, job.public())

    def _delete(self) -> None:
        match = _JOB.match(urlsplit(self.path).path)
        if match is None:
            raise NotFound(f"no such endpoint: DELETE {self.path}")
        self._job(self.app.jobs.cancel(match.group(1)), match.group(1))

    def _job(self, job: Any, job_id: str) -> None:
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        self._json(200, job.public())

    def _static(self, name: str) -> None:
        path = (STATIC / name).resolve()
        if not path.is_relative_to(STATIC) or not path.is_file():
            raise NotFound(f"no such file: {name}")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(200, path.read_bytes(), kind)


def make_server(app: App, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
