"""The range of levels a model was trained on, recorded in its folder, and the warning for requests outside it.

Export records the levels of the training batches (their histogram, and its lowest and highest known level)
under ``trained_levels`` in the folder's ``model_index.json``, beside ``level_scale``. Published folders have
no record: they stay silent, since nothing says what they were trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from text2earth.core.resolution import level_to_gsd
from text2earth.io.files import write_atomic

KEY = "trained_levels"
# A request within 0.05 level (3.5 % in gsd) of the range counts as inside: 13.7 (9.85 m) on a model trained
# down to 13.678 (10 m) is no unsupported request, 18 (0.5 m) is.
_SLACK = 0.05


def _index(folder: str | Path) -> Path:
    return Path(folder) / "model_index.json"


def record_level_range(folder: str | Path, histogram: Mapping[float | str, int]) -> tuple[float, float] | None:
    """Write the known levels (> 0) of ``histogram`` (level -> samples) into ``folder``; return (lowest, highest)."""
    known = {round(float(level), 3): int(count) for level, count in histogram.items() if float(level) > 0 and count}
    if not known:
        return None
    index = json.loads(_index(folder).read_text())
    lo, hi = min(known), max(known)
    index[KEY] = {"min": lo, "max": hi, "histogram": {f"{level:g}": known[level] for level in sorted(known)}}
    write_atomic(_index(folder), (json.dumps(index, indent=2) + "\n").encode())
    return lo, hi


def read_level_range(folder: str | Path) -> tuple[float, float] | None:
    """(lowest, highest) trained level of a model folder, or None when it has no record."""
    index = _index(folder)
    if not index.is_file():
        return None
    try:
        record = json.loads(index.read_text()).get(KEY)
        return (float(record["min"]), float(record["max"])) if record else None
    except (ValueError, TypeError, KeyError, AttributeError, OSError):
        return None  # a damaged index: no warning here; loading the folder reports it in one line


def _describe(level: float) -> str:
    gsd = level_to_gsd(level)
    return f"level {level:g} ({gsd:.3g} m/px)" if gsd is not None else f"level {level:g}"


def level_range_warning(folder: str | Path, levels: Iterable[float]) -> str | None:
    """One line naming the trained range when a requested known level lies outside it, else None."""
    trained = read_level_range(folder)
    if trained is None:
        return None
    lo, hi = trained
    outside = sorted({float(v) for v in levels if float(v) > 0 and not lo - _SLACK <= float(v) <= hi + _SLACK})
    if not outside:
        return None
    asked = ", ".join(_describe(v) for v in outside)
    return (
        f"{asked} lies outside what {folder} was trained on: levels {lo:g}..{hi:g} "
        f"({level_to_gsd(lo):.3g}..{level_to_gsd(hi):.3g} m/px); expect the resolution to be ignored"
    )


def warn_outside_range(folder: str | Path, levels: Iterable[float]) -> str | None:
    """Print :func:`level_range_warning`'s line on stderr (once per call) and return it."""
    import sys

    message = level_range_warning(folder, levels)
    if message:
        print(f"text2earth: warning: {message}", file=sys.stderr)
    return message
