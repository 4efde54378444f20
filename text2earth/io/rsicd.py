"""RSICD's Karpathy-style caption file (``dataset_rsicd.json``): the one parser and the one scene-class rule.

Used by ``text2earth data convert rsicd`` (shards) and by the evaluation's RSICD reader.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

# The class is the file name's word prefix ("denseresidential_12.jpg" -> "denseresidential"). RSICD's
# classes are single words, so anything else (the bare-number files such as "00017.jpg") has none.
_CLASS_RE = re.compile(r"^([A-Za-z]+)_")


@dataclass(frozen=True)
class RsicdEntry:
    """One image of the caption file: its file name ("" when the entry names none), split and captions."""

    filename: str
    split: str | None
    captions: tuple[str, ...]

    @property
    def scene_class(self) -> str | None:
        return rsicd_scene_class(self.filename)


def rsicd_scene_class(filename: str) -> str | None:
    """The scene class of an RSICD file name (lower case), or None when the name has no ``class_`` prefix."""
    match = _CLASS_RE.match(Path(filename).name)
    return match.group(1).lower() if match else None


def read_rsicd_entries(json_path: str | Path, split: str | None = None) -> list[RsicdEntry]:
    """The entries of ``dataset_rsicd.json`` (only ``split``'s when given), captions stripped, empty ones dropped."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(
            f"RSICD caption file {str(json_path)!r} does not exist (give the path of dataset_rsicd.json)"
        )
    try:
        images = json.loads(json_path.read_text(encoding="utf-8"))["images"]
        if not isinstance(images, list):
            raise TypeError("'images' is not a list")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{json_path} is not a Karpathy-style caption file with an 'images' list: {exc}") from None
    entries = []
    for image in images:
        if not isinstance(image, dict) or split not in (None, image.get("split")):
            continue
        sentences = image.get("sentences") or []
        captions = tuple(c for c in (str(s.get("raw", "")).strip() for s in sentences if isinstance(s, dict)) if c)
        entries.append(RsicdEntry(str(image.get("filename") or ""), image.get("split"), captions))
    return entries
