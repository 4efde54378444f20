"""Web Mercator (EPSG:3857): where a generated image lies on the Google / OSM tile grid.

The pixel size of level ``L`` is the Web-Mercator pixel size of zoom ``L`` (fractional levels scale
continuously), so a 256-px image at level ``Z`` covers exactly one tile at zoom ``Z``. That is not the
project's nominal ``gsd = 2**(17 - L)`` (:mod:`text2earth.core.resolution`): it is a length on the
projection, and the true length on the ground is that times cos(latitude).

A :class:`Placement` is an image on the global pixel grid of its level (pixel ``(0, 0)`` at the
north-west corner of the world). Pure math, no geo library: the server and the CLI share it, and the
tests check it against morecantile's tile bounds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from text2earth.core.errors import UserError
from text2earth.core.resolution import MAX_LEVEL

EARTH_CIRCUMFERENCE_M = 2 * math.pi * 6378137.0  # 40075016.686 m: the WGS84 equator, as EPSG:3857 uses it
HALF_WORLD_M = EARTH_CIRCUMFERENCE_M / 2.0
TILE_PX = 256
MAX_LATITUDE = 85.0511287798  # where Web Mercator's square world ends
_TILE_RE = re.compile(r"^\s*(\d+)/(\d+)/(\d+)\s*$")


def pixel_size_m(level: float) -> float:
    """Web-Mercator pixel size (EPSG:3857 metres) at ``level``: 40075016.686 / (256 * 2**level)."""
    if not 0.0 < level <= MAX_LEVEL:
        raise UserError(f"a map placement needs a level in (0, {MAX_LEVEL:g}], got {level!r}")
    return EARTH_CIRCUMFERENCE_M / (TILE_PX * 2.0**level)


def ground_size_m(level: float, latitude: float) -> float:
    """True ground length of one pixel at ``latitude``: the Web-Mercator pixel size times cos(latitude)."""
    return pixel_size_m(level) * math.cos(math.radians(latitude))


def check_lat_lon(lat: float, lon: float) -> tuple[float, float]:
    """``(lat, lon)`` as floats, or a one-line error outside Web Mercator's world."""
    if not (math.isfinite(lat) and -MAX_LATITUDE <= lat <= MAX_LATITUDE):
        raise UserError(f"latitude must lie in -{MAX_LATITUDE:.4f}..{MAX_LATITUDE:.4f} (Web Mercator), got {lat!r}")
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise UserError(f"longitude must lie in -180..180, got {lon!r}")
    return float(lat), float(lon)


def parse_at(text: str) -> tuple[float, float]:
    """``"LAT,LON"`` (degrees, WGS84) -> ``(lat, lon)``."""
    parts = text.split(",")
    try:
        lat, lon = (float(p) for p in parts)
    except ValueError:
        raise UserError(f"--at must be LAT,LON in degrees (e.g. 48.8584,2.2945), got {text!r}") from None
    return check_lat_lon(lat, lon)


def parse_tile(text: str) -> tuple[int, int, int]:
    """``"Z/X/Y"`` -> ``(z, x, y)``; a tile that does not exist at zoom ``Z`` is an error."""
    match = _TILE_RE.match(text)
    if match is None:
        raise UserError(f"--tile must be Z/X/Y with whole numbers (e.g. 17/66384/45091), got {text!r}")
    z, x, y = (int(g) for g in match.groups())
    if not 1 <= z <= MAX_LEVEL:
        raise UserError(f"tile zoom must lie in 1..{MAX_LEVEL:g}, got {z}")
    if x >= 2**z or y >= 2**z:
        raise UserError(f"tile {z}/{x}/{y} does not exist: at zoom {z}, X and Y lie in 0..{2**z - 1}")
    return z, x, y


def lonlat_to_xy(lon: float, lat: float) -> tuple[float, float]:
    """WGS84 degrees -> EPSG:3857 metres (spherical Mercator)."""
    x = math.radians(lon) * EARTH_CIRCUMFERENCE_M / (2 * math.pi)
    y = math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) * EARTH_CIRCUMFERENCE_M / (2 * math.pi)
    return x, y


def xy_to_lonlat(x: float, y: float) -> tuple[float, float]:
    """EPSG:3857 metres -> WGS84 degrees."""
    radius = EARTH_CIRCUMFERENCE_M / (2 * math.pi)
    return math.degrees(x / radius), math.degrees(2 * math.atan(math.exp(y / radius)) - math.pi / 2)


@dataclass(frozen=True)
class Placement:
    """An image of ``width`` x ``height`` pixels whose north-west corner is global pixel ``(col, row)`` of ``level``."""

    level: float
    col: float
    row: float
    width: int
    height: int

    @property
    def pixel_size(self) -> float:
        return pixel_size_m(self.level)

    @property
    def origin(self) -> tuple[float, float]:
        """EPSG:3857 metres of the north-west corner."""
        return self.col * self.pixel_size - HALF_WORLD_M, HALF_WORLD_M - self.row * self.pixel_size

    @property
    def bounds_xy(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in EPSG:3857 metres."""
        left, top = self.origin
        return left, top - self.height * self.pixel_size, left + self.width * self.pixel_size, top

    @property
    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees."""
        left, bottom, right, top = self.bounds_xy
        return (*xy_to_lonlat(left, bottom), *xy_to_lonlat(right, top))

    @property
    def centre_lonlat(self) -> tuple[float, float]:
        left, bottom, right, top = self.bounds_xy
        return xy_to_lonlat((left + right) / 2, (bottom + top) / 2)

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        """The affine geotransform (a, b, c, d, e, f), north up, as rasterio and STAC write it."""
        left, top = self.origin
        return (self.pixel_size, 0.0, left, 0.0, -self.pixel_size, top)

    def ground_size_m(self) -> float:
        """True ground length of a pixel at the image's centre latitude."""
        return ground_size_m(self.level, self.centre_lonlat[1])

    def check_inside_world(self) -> None:
        world = TILE_PX * 2.0**self.level
        if self.col < 0 or self.row < 0 or self.col + self.width > world or self.row + self.height > world:
            raise UserError(
                f"a {self.width}x{self.height} image at level {self.level:g} there would cross the edge of the "
                "Web-Mercator world (the antimeridian or the poles): place it further inside"
            )


def global_pixel(lat: float, lon: float, level: float) -> tuple[float, float]:
    """``(col, row)`` of a point on the global pixel grid of ``level`` (fractional)."""
    x, y = lonlat_to_xy(lon, lat)
    size = pixel_size_m(level)
    return (x + HALF_WORLD_M) / size, (HALF_WORLD_M - y) / size


def place_at(lat: float, lon: float, level: float, width: int, height: int) -> Placement:
    """An image centred on ``(lat, lon)``."""
    col, row = global_pixel(lat, lon, level)
    placement = Placement(level, col - width / 2, row - height / 2, width, height)
    placement.check_inside_world()
    return placement


def place_on_tile(tile: tuple[int, int, int], level: float, width: int, height: int) -> Placement:
    """An image centred on tile ``(z, x, y)``: at ``level == z`` and 256 px it covers the tile exactly."""
    z, x, y = tile
    scale = TILE_PX * 2.0 ** (level - z)  # the tile's side in pixels of ``level``
    placement = Placement(level, (x + 0.5) * scale - width / 2, (y + 0.5) * scale - height / 2, width, height)
    placement.check_inside_world()
    return placement


@dataclass(frozen=True)
class Location:
    """Where the user asked to put an image: a point (``--at``) or a tile (``--tile``)."""

    at: tuple[float, float] | None = None
    tile: tuple[int, int, int] | None = None

    def place(self, level: float, width: int, height: int) -> Placement:
        if self.tile is not None:
            return place_on_tile(self.tile, level, width, height)
        assert self.at is not None
        return place_at(*self.at, level, width, height)

    def describe(self) -> str:
        if self.tile is not None:
            return "tile {}/{}/{}".format(*self.tile)
        return "{:.6f},{:.6f}".format(*self.at)
