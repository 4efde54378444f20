"""Scenes of the web app, kept on disk: one folder per scene under ``OUT/scenes/ID``.

A scene is a rectangle of pixels on the global pixel grid of its level (Web Mercator), its image and its
history. Each version's files go into their own folder ``v{N}/`` (PNG, COG, STAC item); then
``scene.json`` is replaced atomically to point at version N, and only then are older versions removed.
So ``scene.json`` always names a complete version: a restart (or a crash mid-save) loses no finished output.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from text2earth.core.errors import UserError
from text2earth.core.resolution import level_to_gsd
from text2earth.core.webmercator import Placement
from text2earth.io.files import write_atomic
from text2earth.io.geo import georeference
from text2earth.io.images import load_rgb, save_png
from text2earth.io.pngmeta import image_text

SCENE_ID = re.compile(r"^[0-9a-f]{12}$")
DOWNLOADS = ("scene.png", "scene.tif", "scene.stac.json", "scene.json")


class NotFound(UserError):
    """A scene, job or file that does not exist (HTTP 404)."""


@dataclass
class Scene:
    """Pixel ``(col, row)`` of the level's global grid is the scene's north-west corner."""

    id: str
    level: float
    col: int
    row: int
    width: int
    height: int
    prompt: str
    seed: int
    model: str
    version: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def placement(self) -> Placement:
        return Placement(self.level, self.col, self.row, self.width, self.height)

    def describe(self, geo: bool) -> dict[str, Any]:
        """What the page and the API show: the JSON of the scene plus its map bounds and pixel sizes."""
        placement = self.placement
        west, south, east, north = placement.bounds_lonlat
        files = ["scene.png", *(["scene.tif", "scene.stac.json"] if geo else [])]
        return {
            **asdict(self),
            "bounds": {"west": west, "south": south, "east": east, "north": north},
            "nominal_gsd_m": level_to_gsd(self.level),
            "pixel_size_m": placement.pixel_size,
            "ground_size_m": placement.ground_size_m(),
            "files": {name: f"/api/scenes/{self.id}/files/{name}" for name in files},
        }


class SceneStore:
    """Scenes on disk under ``root/scenes``; loaded at start, saved after every finished job."""

    def __init__(self, root: str | Path, geo: bool) -> None:
        self.root = Path(root).resolve() / "scenes"
        self.root.mkdir(parents=True, exist_ok=True)
        self.geo = geo
        self._lock = threading.Lock()
        self._scenes: dict[str, Scene] = {}
        for path in sorted(self.root.glob("*/scene.json")):
            data = json.loads(path.read_text())
            self._scenes[data["id"]] = Scene(**data)

    def new_id(self) -> str:
        return secrets.token_hex(6)

    def list(self) -> list[Scene]:
        with self._lock:
            return list(self._scenes.values())

    def get(self, scene_id: str) -> Scene:
        with self._lock:
            scene = self._scenes.get(scene_id) if SCENE_ID.match(scene_id or "") else None
        if scene is None:
            raise NotFound(f"no scene {scene_id!r}")
        return scene

    def _version_dir(self, scene: Scene) -> Path:
        return self.root / scene.id / f"v{scene.version}"

    def image(self, scene: Scene) -> np.ndarray:
        return np.asarray(load_rgb(self._version_dir(scene) / "scene.png"))

    def save(self, scene: Scene, image: np.ndarray, action: dict[str, Any]) -> Scene:
        """Write the next version's PNG (+ COG and STAC item with ``[geo]``), then the JSON: the commit point."""
        scene.version += 1
        scene.history.append(action)
        scene.height, scene.width = image.shape[:2]
        version = self._version_dir(scene)
        shutil.rmtree(version, ignore_errors=True)  # the leftovers of a save that crashed before its commit
        text = image_text(scene.prompt, scene.level, seed=scene.seed, model=scene.model, version=scene.version)
        png = save_png(image, version / "scene.png", text)
        if self.geo:
            properties = {"prompt": scene.prompt, "level": scene.level, "seed": scene.seed, "model": scene.model}
            georeference(png, scene.placement, properties)
        write_atomic(version.parent / "scene.json", json.dumps(asdict(scene), indent=2).encode())
        for old in version.parent.glob("v*"):
            if old != version:
                shutil.rmtree(old, ignore_errors=True)
        with self._lock:
            self._scenes[scene.id] = scene
        return scene

    def file(self, scene_id: str, name: str) -> Path:
        """A downloadable file of a scene; never a path outside that scene's folder."""
        scene = self.get(scene_id)
        folder = (self.root / scene.id if name == "scene.json" else self._version_dir(scene)).resolve()
        path = (folder / name).resolve()
        if name not in DOWNLOADS or path.parent != folder or not path.is_file():
            raise NotFound(f"scene {scene_id} has no file {name!r} (downloads: {', '.join(DOWNLOADS)})")
        return path
