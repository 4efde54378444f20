"""``--at LAT,LON`` / ``--tile Z/X/Y``: one helper adds them to generate, edit, outpaint and translate,
checks them (and the ``[geo]`` extra) before any model loads, and georeferences what a command wrote."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from text2earth.core.errors import UserError
from text2earth.core.resolution import check_level, gsd_to_level, parse_prompt
from text2earth.core.webmercator import Location, parse_at, parse_tile


def add_location_options(parser: argparse.ArgumentParser) -> None:
    """``--at`` and ``--tile`` (one or the other) on a subcommand that also has ``--level`` / ``--gsd``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--at",
        metavar="LAT,LON",
        help="place the output centred on this point (degrees): also writes a COG in EPSG:3857 and a STAC item",
    )
    group.add_argument(
        "--tile",
        metavar="Z/X/Y",
        help="place the output on this Web-Mercator tile (level Z unless --level/--gsd is given): COG + STAC item",
    )


def resolve_location(args: argparse.Namespace, prompt: str | None = None) -> Location | None:
    """The parsed location, or None without ``--at`` / ``--tile``. ``--tile`` sets ``args.level`` to Z when no
    resolution is given; ``--at`` needs one (``--level``, ``--gsd`` or the published prompt prefix)."""
    from text2earth.io.geo import require_geo

    if args.at is None and args.tile is None:
        return None
    location = Location(at=parse_at(args.at)) if args.at is not None else Location(tile=parse_tile(args.tile))
    require_geo()
    level = given_level(args, prompt)
    if level is None and location.tile is not None:
        args.level = float(location.tile[0])
    elif level is None:
        raise UserError("--at needs the resolution to place the image: give --level or --gsd")
    elif level == 0:
        raise UserError("level 0 means 'unknown resolution': an image placed on the map needs a level above 0")
    return location


def given_level(args: argparse.Namespace, prompt: str | None = None) -> float | None:
    """The exact level the user asked for (``--level``, ``--gsd`` or the prompt prefix), or None."""
    if getattr(args, "level", None) is not None:
        return check_level(args.level)
    if getattr(args, "gsd", None) is not None:
        return gsd_to_level(args.gsd)
    return parse_prompt(prompt)[1] if prompt else None


def georeference_outputs(
    location: Location | None, images: list[Path], level: float | None, **properties: Any
) -> list[dict[str, Any]]:
    """A COG and a STAC item beside each image (placed by its own size at ``level``); one line printed for each.

    ``properties`` (prompt, seed, model) are defaults; a PNG's own text chunks take precedence. Without a
    ``level`` the PNG's is used (it is rounded to 6 digits there, so an exact one is passed when known).
    """
    from text2earth.io.geo import georeference
    from text2earth.io.images import load_image, read_png_text

    if location is None:
        return []
    reports = []
    for path in images:
        text = read_png_text(path) if path.suffix.lower() == ".png" else {}
        props = {**properties, **{k: text[k] for k in ("prompt", "level", "seed", "model") if k in text}}
        # Typed in the STAC item: PNG text chunks are strings.
        props["level"] = float(level if level is not None else props["level"])
        if "seed" in props:
            props["seed"] = int(props["seed"])
        width, height = load_image(path).size
        placement = location.place(props["level"], width, height)
        props["location"] = location.describe()
        report = georeference(path, placement, props)
        print(
            f"placed {path.name} at {location.describe()}: {report['cog']} + {report['stac']} "
            f"(pixel {report['pixel_size_m']:.4g} m in EPSG:3857, {report['ground_size_m']:.4g} m on the ground; "
            f"nominal gsd {report['nominal_gsd_m']:g} m)"
        )
        reports.append(report)
    return reports
