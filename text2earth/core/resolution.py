"""Ground resolution vocabulary: ``gsd_m`` (metres per pixel) and zoom ``level``.

The published Text2Earth model is conditioned on a Google-maps zoom level ``L`` with
``gsd = 2 ** (17 - L)`` metres per pixel (L=18: 0.5 m, L=10: 128 m). Level 0 means
"unknown" and doubles as the null condition for classifier-free guidance. This module
is the only place that converts between the two or parses the published
``"{L}_GOOGLE_LEVEL_{caption}"`` prompt prefix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

UNKNOWN_LEVEL = 0.0
MIN_LEVEL = 0.0
MAX_LEVEL = 24.0
PREFIX_SEPARATOR = "_GOOGLE_LEVEL_"
# Only a number followed by the separator at the very start is a prefix: a caption that
# merely mentions the phrase further on stays untouched.
_PREFIX_RE = re.compile(r"^\s*(?P<level>[-+]?\d+(?:\.\d+)?)" + PREFIX_SEPARATOR)


def check_level(level: float) -> float:
    """Return ``level`` as a float, or raise ``ValueError`` when it is not a valid level."""
    try:
        value = float(level)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"level must be a number, got {level!r}") from exc
    if math.isnan(value) or not MIN_LEVEL <= value <= MAX_LEVEL:
        raise ValueError(f"level must lie in {MIN_LEVEL:g}..{MAX_LEVEL:g} (0 = unknown), got {level!r}")
    return value


def gsd_to_level(gsd_m: float | None) -> float:
    """Zoom level for a ground sample distance in metres; ``None`` gives the unknown level 0."""
    if gsd_m is None:
        return UNKNOWN_LEVEL
    try:
        gsd = float(gsd_m)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"gsd_m must be a number, got {gsd_m!r}") from exc
    if math.isnan(gsd) or gsd <= 0:
        raise ValueError(f"gsd_m must be a positive number of metres per pixel, got {gsd_m!r}")
    level = 17.0 - math.log2(gsd)
    if not 0.0 < level <= MAX_LEVEL:
        raise ValueError(f"gsd_m={gsd_m!r} gives level {level:.3f}, outside the model's range (0, {MAX_LEVEL:g}]")
    return level


def level_to_gsd(level: float) -> float | None:
    """Ground sample distance in metres for a zoom level; ``None`` for the unknown level 0."""
    value = check_level(level)
    if value == UNKNOWN_LEVEL:
        return None
    return 2.0 ** (17.0 - value)


def resolve_level(level: float | None = None, gsd_m: float | None = None) -> float:
    """One level from either ``level`` or ``gsd_m`` (not both); neither gives level 0."""
    if level is not None and gsd_m is not None:
        raise ValueError("give either level or gsd_m, not both")
    if gsd_m is not None:
        return gsd_to_level(gsd_m)
    if level is None:
        return UNKNOWN_LEVEL
    return check_level(level)


def resolve_levels(
    n: int,
    level: float | Sequence[float] | None = None,
    gsd_m: float | Sequence[float] | None = None,
) -> list[float]:
    """``n`` levels from a scalar or per-item ``level`` / ``gsd_m`` (``None`` entries are unknown)."""
    if level is not None and gsd_m is not None:
        raise ValueError("give either level or gsd_m, not both")
    values, to_level = (gsd_m, gsd_to_level) if gsd_m is not None else (level, check_level)
    if values is None:
        return [UNKNOWN_LEVEL] * n
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        return [to_level(values)] * n
    if len(values) != n:
        raise ValueError(f"got {len(values)} resolution values for {n} prompts")
    return [UNKNOWN_LEVEL if v is None else to_level(v) for v in values]


def parse_prompt(prompt: str) -> tuple[str, float | None]:
    """Split the published ``"{L}_GOOGLE_LEVEL_{caption}"`` form into ``(caption, level)``.

    A prompt without the prefix returns ``(prompt, None)``: the caller decides the level.
    """
    match = _PREFIX_RE.match(prompt)
    if match is None:
        return prompt, None
    return prompt[match.end() :], check_level(match.group("level"))


def format_prompt(caption: str, level: float) -> str:
    """The published prompt form; integral levels are written without a decimal point."""
    value = check_level(level)
    text = str(int(value)) if value.is_integer() else f"{value:g}"
    return f"{text}{PREFIX_SEPARATOR}{caption}"


def describe(level: float) -> str:
    """Human label such as ``"L17 (1 m/px)"`` or ``"L0 (unknown)"``."""
    gsd = level_to_gsd(level)
    if gsd is None:
        return "L0 (unknown)"
    return f"L{round(level, 2):g} ({gsd:g} m/px)"
