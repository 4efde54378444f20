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
