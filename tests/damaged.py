"""Damaged copies of a built shard set, for the tests that count what a truncated shard lost: real shards on
disk, really cut short. Lives beside the tests; the library never imports it."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path

from text2earth.io.shards import read_shard_samples


def damaged_copy(folder: Path, to: Path, cut: Callable[[bytes], int]) -> tuple[Path, dict[str, int]]:
    """The val shards and ``manifest.json`` of a built set copied to ``to``, ``val-000000.tar`` cut to
    ``cut(its bytes)`` bytes; returns the copy and the per-shard counts the writer recorded, after checking
    them against the whole shards (so a writer that records wrong counts fails here)."""
    to.mkdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    recorded = {name: manifest["shard_samples"][name] for name in manifest["shards"]["val"]}
    for name in recorded:
        assert recorded[name] == sum(1 for _ in read_shard_samples(folder / name)) > 1, name
        (to / name).write_bytes((folder / name).read_bytes())
    (to / "manifest.json").write_text(json.dumps(manifest))
    whole = (to / "val-000000.tar").read_bytes()
    (to / "val-000000.tar").write_bytes(whole[: cut(whole)])
    return to, recorded


def first_member_offset(path: Path, index: int) -> int:
    """The byte offset of the data of the first member of sample ``index`` (0-based) of a shard: a cut a
    little after it leaves samples ``0 .. index - 1`` whole and nothing of the rest."""
    seen: list[str] = []
    with tarfile.open(path) as tar:
        for member in tar:
            key = member.name.partition(".")[0]
            if not seen or seen[-1] != key:
                seen.append(key)
                if len(seen) == index + 1:
                    return member.offset_data
    raise AssertionError(f"{path} has fewer than {index + 1} samples")


def drop_recorded_counts(folder: Path) -> None:
    """Rewrite ``folder/manifest.json`` as a writer from before ``shard_samples`` existed would have left it."""
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["shard_samples"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
