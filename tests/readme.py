"""The README's fenced code blocks and their ``readme-test`` markers (shared by the README tests).

A ``bash`` / ``sh`` / ``python`` block runs unless the line before its opening fence (blank lines allowed)
holds ``<!-- readme-test: skip REASON -->`` (not run; REASON must be given) or
``<!-- readme-test: stand-in NAME [what it substitutes] -->`` (run against stand-in NAME that the test builds).
Other fence languages (``text``, ``console``) are listings and never run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RUNNABLE = {"bash", "sh", "python"}
_MARKER = re.compile(r"^<!--\s*readme-test:\s*(\S+)\s*(.*?)\s*-->$")
_FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    mode: str  # "run" | "skip" | "stand-in" | "listing"
    note: str  # the skip reason, or the stand-in's name and description

    @property
    def standin(self) -> str:
        return self.note.split()[0] if self.mode == "stand-in" and self.note else ""


def readme_blocks(path: Path) -> list[Block]:
    """Every fenced block of the README with its mode; a malformed marker raises ValueError."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        lang, start = fence.group(1).lower(), i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        prev = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER.match(prev)
        mode, note = ("run", "") if lang in RUNNABLE else ("listing", "")
        if marker:
            mode, note = marker.group(1), marker.group(2)
            if mode not in ("skip", "stand-in") or not note:
                raise ValueError(f"README line {start}: readme-test marker needs 'skip REASON' or 'stand-in NAME'")
            if lang not in RUNNABLE:
                raise ValueError(f"README line {start}: a readme-test marker on a ```{lang} listing")
        blocks.append(Block(start + 1, lang, "\n".join(lines[start + 1 : end]) + "\n", mode, note))
        i = end + 1
    return blocks


# A measured figure in the README: the number right before ``<!-- figure FILE:KEY/PATH [xSCALE] [±TOL[%]] -->``,
# which names docs/figures/FILE.json and the value's path in it. Without ±TOL the README must show the value
# rounded to the digits it prints; machine-dependent figures state their tolerance.
_FIGURE = re.compile(
    r"(-?[\d,]*\.?\d+)\s*%?\s*(?:\*\*)?\s*<!--\s*figure\s+(\w+):(\S+)"
    r"(?:\s+x([\d.]+))?(?:\s+±([\d.]+)(%?))?\s*-->"
)


@dataclass(frozen=True)
class Figure:
    line: int
    shown: str  # the number as the README prints it
    file: str
    path: str
    scale: float
    tolerance: float | None
    relative: bool

    @property
    def value(self) -> float:
        return float(self.shown.replace(",", ""))

    @property
    def allowed(self) -> float:
        """How far the README may be from the file's value."""
        if self.tolerance is not None:
            return self.tolerance / 100 * abs(self.value) if self.relative else self.tolerance
        decimals = len(self.shown.split(".")[1]) if "." in self.shown else 0
        return 0.5 * 10**-decimals + 1e-9


def readme_figures(path: Path) -> list[Figure]:
    figures = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        for m in _FIGURE.finditer(line):
            tol = float(m.group(5)) if m.group(5) else None
            figures.append(
                Figure(n, m.group(1), m.group(2), m.group(3), float(m.group(4) or 1), tol, m.group(6) == "%")
            )
    return figures
