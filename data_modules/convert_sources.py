"""Readers of the source datasets ``text2earth data convert`` turns into shards.

Every source splits its rows into ``Task``s (contiguous row ranges, converted independently, in
parallel) and turns one raw row into one normalised ``Record`` or raises ``Skip`` with a reason:

* ``Git10mSource``: Git-10M Parquet or Arrow files, or a ``datasets.save_to_disk`` folder (a
  ``Dataset`` with ``state.json`` or a ``DatasetDict`` with ``dataset_dict.json``), read with pyarrow
  only. Both the current fields (``image``, ``img_name``, ``img_quality_score``, ``caption``,
  ``resolution``, ``Google_location`` = ``"Z_X_Y"``) and the older ``image`` + ``text`` form with the
  ``"{L}_GOOGLE_LEVEL_"`` prefix.
* ``FolderSource``: an image folder with a CSV or JSONL of captions (optional ``gsd_m``, ``level``,
  ``lat``, ``lon``, ``quality``, ``modality``, ``source`` columns).
* ``RsicdSource``: RSICD's Karpathy-style ``dataset_rsicd.json`` and its image folder (split and scene
  class kept).
"""

from __future__ import annotations

import csv
import glob
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from data_modules.webdataset_datamodule import sample_level
from text2earth.core.errors import UserError
from text2earth.core.resolution import parse_prompt
from text2earth.io.rsicd import RsicdEntry, read_rsicd_entries

GIT10M_COLUMNS = (
    "image",
    "img_name",
    "img_quality_score",
    "caption",
    "caption_length",
    "resolution",
    "Google_location",
    "text",
)


class Skip(Exception):
    """A row that cannot become a sample; ``reason`` is one of a few fixed words (counted in the report)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Task:
    """Rows ``start..stop`` of one input (a table file, or a slice of an index held in ``rows``)."""

    index: int
    path: str
    start: int
    stop: int
    first_key: int  # global number of the task's first row: sample keys do not depend on scheduling
    split: str | None = None
    rows: tuple = field(default=(), repr=False)


@dataclass
class Record:
    """One normalised sample: image bytes, caption and the metadata written to ``.json``."""

    image: bytes
    caption: str
    meta: dict[str, Any]


def web_mercator_nw_corner(z: int, x: int, y: int) -> tuple[float, float]:
    """``(lat, lon)`` in degrees of the north-west corner of XYZ tile ``z/x/y`` (standard web-mercator)."""
    n = 2.0**z
    lon = x / n * 360.0 - 180.0
    lat = math.degrees(math.atan(math.sinh(math.pi * (1.0 - 2.0 * y / n))))
    return lat, lon


def parse_google_location(value: Any) -> tuple[float, float, dict[str, int]] | None:
    """Git-10M's ``"Z_X_Y"`` -> ``(lat, lon, {"z", "x", "y"})``; empty -> ``None``; malformed -> ``Skip``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parts = str(value).strip().split("_")
    try:
        z, x, y = (int(p) for p in parts)
    except ValueError:
        raise Skip("bad_metadata", f"Google_location {value!r} is not 'Z_X_Y'") from None
    if not (0 <= z <= 30 and 0 <= x < 2**z and 0 <= y < 2**z):
        raise Skip("bad_metadata", f"Google_location {value!r} is not a valid XYZ tile")
    lat, lon = web_mercator_nw_corner(z, x, y)
    return lat, lon, {"z": z, "x": x, "y": y}


def _number(row: dict[str, Any], name: str) -> float | None:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Skip("bad_metadata", f"{name}={value!r} is not a number") from None
    if math.isnan(number):
        return None
    return number


def _caption(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Skip("missing_caption", "no caption" if value is None else f"caption {value!r}")
    return value.strip()


def resolution_meta(level: float | None, gsd_m: float | None) -> dict[str, Any]:
    """``level`` / ``gsd_m`` for ``.json``, checked for range and agreement (level 0 = unknown, gsd null)."""
    try:
        value, gsd = sample_level({"level": level, "gsd_m": gsd_m} if level is not None else {"gsd_m": gsd_m})
    except ValueError as exc:
        raise Skip("bad_metadata", str(exc)) from None
    return {"level": round(value, 6), "gsd_m": None if math.isnan(gsd) else gsd}


def _location(lat: float | None, lon: float | None) -> dict[str, Any]:
    if (lat is None) != (lon is None):
        raise Skip("bad_metadata", f"lat={lat} and lon={lon}: give both or neither")
    if lat is not None and not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise Skip("bad_metadata", f"lat={lat}, lon={lon} outside the globe")
    return {"lat": lat, "lon": lon}


def _split_tasks(inputs: list[tuple[str, int, str | None]], rows_per_task: int, start_index: int = 0) -> list[Task]:
    """Contiguous row ranges of at most ``rows_per_task`` over ``(path, n_rows, split)`` inputs."""
    tasks: list[Task] = []
    first = 0
    for path, n_rows, split in inputs:
        for start in range(0, n_rows, rows_per_task):
            stop = min(n_rows, start + rows_per_task)
            tasks.append(Task(start_index + len(tasks), path, start, stop, first + start, split))
        first += n_rows
    return tasks


# -- Git-10M ---------------------------------------------------------------------------------------


def _arrow_reader(path: str) -> Any:
    """A record-batch reader over an Arrow IPC *file* or *stream* (``datasets`` writes streams)."""
    source = pa.memory_map(path)
    try:
        return pa.ipc.open_file(source)
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_stream(source)


def _arrow_batches(path: str) -> Iterator[pa.RecordBatch]:
    reader = _arrow_reader(path)
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
    else:
        yield from reader


def _table_rows(path: str) -> int:
    try:
        if path.endswith(".parquet"):
            return pq.ParquetFile(path).metadata.num_rows
        return sum(batch.num_rows for batch in _arrow_batches(path))  # memory-mapped: no copy
    except (pa.ArrowException, OSError) as exc:  # pyarrow's own words name its internals, not the problem
        kind = "Parquet" if path.endswith(".parquet") else "Arrow"
        raise UserError(
            f"cannot read {path} as a {kind} file: it is damaged or not one ({type(exc).__name__})"
        ) from None


def _read_rows(path: str, start: int, stop: int) -> list[dict[str, Any]]:
    """Rows ``start..stop`` of a Parquet or Arrow file as dicts (only the Git-10M columns)."""
    if path.endswith(".parquet"):
        pf = pq.ParquetFile(path)
        columns = [c for c in GIT10M_COLUMNS if c in pf.schema_arrow.names]
        groups, offset, first = [], 0, None
        for i in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if offset < stop and offset + n > start:
                groups.append(i)
                first = offset if first is None else first
            offset += n
        table = pf.read_row_groups(groups, columns=columns)
        return table.slice(start - first, stop - start).to_pylist()
    rows: list[dict[str, Any]] = []
    offset = 0
    for batch in _arrow_batches(path):
        n = batch.num_rows
        if offset < stop and offset + n > start:
            lo, hi = max(start, offset) - offset, min(stop, offset + n) - offset
            columns = [c for c in GIT10M_COLUMNS if c in batch.schema.names]
            rows.extend(batch.select(columns).slice(lo, hi - lo).to_pylist())
        offset += n
        if offset >= stop:
            break
    return rows


def _save_to_disk_files(folder: Path, split: str | None) -> list[tuple[str, str | None]]:
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        if split is not None and split not in splits:
            raise ValueError(f"{folder}: no split {split!r} (has {', '.join(splits)})")
        return [f for s in splits if split in (None, s) for f in _save_to_disk_files(folder / s, None)]
    state = json.loads((folder / "state.json").read_text())
    name = folder.name if (folder.parent / "dataset_dict.json").is_file() else state.get("_split")
    return [(str(folder / f["filename"]), name) for f in state["_data_files"]]


def git10m_files(spec: str, split: str | None = None) -> list[tuple[str, str | None]]:
    """``(file, split)`` for a Parquet/Arrow file, a glob, a folder of them or a ``save_to_disk`` folder."""
    path = Path(spec)
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return _save_to_disk_files(path, split)
        files = sorted([*path.rglob("*.parquet"), *path.rglob("*.arrow")])
        found = [(str(f), split) for f in files]
    else:
        found = [(f, split) for f in sorted(glob.glob(spec))]
    if not found:
        raise FileNotFoundError(f"no Parquet/Arrow files or save_to_disk folder at {spec!r}")
    return found


def _image_bytes(value: Any) -> bytes:
    """``datasets``' Image feature (a ``{bytes, path}`` struct) or plain binary."""
    if isinstance(value, dict):
        value = value.get("bytes")
    if not value:
        raise Skip("missing_image", "no image bytes")
    return bytes(value)


@dataclass(frozen=True)
class Git10mSource:
    kind: ClassVar[str] = "git10m"
    spec: str
    split: str | None = None
    name: str = "git10m"

    def tasks(self, rows_per_task: int) -> list[Task]:
        files = git10m_files(self.spec, self.split)
        return _split_tasks([(f, _table_rows(f), s) for f, s in files], rows_per_task)

    def rows(self, task: Task) -> list[dict[str, Any]]:
        return _read_rows(task.path, task.start, task.stop)

    def record(self, row: dict[str, Any], task: Task, row_index: int) -> Record:
        image = _image_bytes(row.get("image"))
        meta: dict[str, Any] = {"id": row.get("img_name") or f"{Path(task.path).name}:{row_index}"}
        if "caption" in row:  # the current dataset card
            caption = _caption(row.get("caption"))
            level = _number(row, "resolution")
        else:  # the older revision: "{L}_GOOGLE_LEVEL_{caption}" in ``text``
            text = row.get("text")
            try:
                body, level = parse_prompt(text) if isinstance(text, str) else (text, None)
            except ValueError as exc:
                raise Skip("bad_metadata", f"text prefix: {exc}") from None
            caption = _caption(body)
        meta.update(resolution_meta(0.0 if level is None else level, None))
        location = parse_google_location(row.get("Google_location"))
        meta.update(_location(*location[:2]) if location else _location(None, None))
        if location:
            meta["google_tile"] = location[2]
        meta["quality"] = _number(row, "img_quality_score")
        meta["source"] = self.name
        meta["modality"] = "rgb"
        if task.split:
            meta["split"] = task.split
        return Record(image, caption, meta)


# -- image folder + CSV / JSONL --------------------------------------------------------------------

_IMAGE_COLUMNS = ("image", "file", "filename", "file_name", "path")
_CAPTION_COLUMNS = ("caption", "text")


def _read_index(path: Path) -> list[dict[str, Any]]:
    try:
        return _parse_index(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(
            f"cannot read captions file {str(path)!r}: not UTF-8 {path.suffix[1:].upper()} text ({exc.reason if isinstance(exc, UnicodeDecodeError) else exc})"
        ) from None


def _parse_index(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
        return rows
    raise ValueError(f"captions file must be .csv or .jsonl, got {path.name!r}")


def check_input_folder(folder: str | Path, what: str) -> Path:
    """``folder`` if it is a folder; else a one-line error that says whether it is missing or a file."""
    path = Path(folder)
    if path.is_file():
        raise UserError(f"{what} {folder} is a file, not a folder")
    if not path.is_dir():
        raise UserError(f"{what} {folder} does not exist")
    return path


def _first(row: dict[str, Any], names: tuple[str, ...]) -> Any:
    return next((row[n] for n in names if row.get(n) not in (None, "")), None)


@dataclass(frozen=True)
class FolderSource:
    kind: ClassVar[str] = "folder"
    images: str
    captions: str
    name: str = "folder"
    allow_outside: bool = False  # rows may name files outside the image folder (.., absolute paths)

    def tasks(self, rows_per_task: int) -> list[Task]:
        index_path = Path(self.captions)
        check_input_folder(self.images, "image folder")
        if not index_path.is_file():
            what = "is a folder" if index_path.is_dir() else "does not exist"
            raise FileNotFoundError(f"captions file {self.captions} {what}")
        rows = _read_index(index_path)
        if rows and not any(c in rows[0] for c in _IMAGE_COLUMNS):
            raise ValueError(f"{index_path.name}: needs an image column ({'/'.join(_IMAGE_COLUMNS)})")
        if not self.allow_outside:
            self._check_inside(rows, index_path)
        tasks = _split_tasks([(self.captions, len(rows), None)], rows_per_task)
        return [Task(t.index, t.path, t.start, t.stop, t.first_key, None, tuple(rows[t.start : t.stop])) for t in tasks]

    def _check_inside(self, rows: list[dict[str, Any]], index_path: Path) -> None:
        """A captions file someone sent must not make the converter read files elsewhere on this machine."""
        root = Path(self.images).resolve()
        for n, row in enumerate(rows, 2 if index_path.suffix.lower() == ".csv" else 1):
            name = _first(row, _IMAGE_COLUMNS)
            if name is not None and not (root / str(name)).resolve().is_relative_to(root):
                raise UserError(
                    f"{index_path.name} line {n} names {str(name)!r}, outside the image folder {self.images}: refused "
                    "(pass --allow-outside-images if the file is yours)"
                )

    def rows(self, task: Task) -> list[dict[str, Any]]:
        return list(task.rows)

    def record(self, row: dict[str, Any], task: Task, row_index: int) -> Record:
        name = _first(row, _IMAGE_COLUMNS)
        if name is None:
            raise Skip("missing_image", "no image file named")
        path = Path(self.images) / str(name)
        if not path.is_file():
            raise Skip("missing_image", f"{name}: file not found")
        caption = _caption(_first(row, _CAPTION_COLUMNS))
        meta: dict[str, Any] = {"id": str(name)}
        meta.update(resolution_meta(_number(row, "level"), _number(row, "gsd_m")))
        meta.update(_location(_number(row, "lat"), _number(row, "lon")))
        meta["quality"] = _number(row, "quality")
        meta["source"] = row.get("source") or self.name
        meta["modality"] = row.get("modality") or "rgb"
        return Record(path.read_bytes(), caption, meta)


# -- RSICD -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RsicdSource:
    kind: ClassVar[str] = "rsicd"
    annotations: str
    images: str
    split: str | None = None
    name: str = "rsicd"

    def tasks(self, rows_per_task: int) -> list[Task]:
        check_input_folder(self.images, "image folder")
        rows = read_rsicd_entries(self.annotations, split=self.split)
        tasks = _split_tasks([(self.annotations, len(rows), self.split)], rows_per_task)
        return [
            Task(t.index, t.path, t.start, t.stop, t.first_key, t.split, tuple(rows[t.start : t.stop])) for t in tasks
        ]

    def rows(self, task: Task) -> list[dict[str, Any]]:
        return list(task.rows)

    def record(self, row: RsicdEntry, task: Task, row_index: int) -> Record:
        filename = row.filename
        if not filename:
            raise Skip("missing_image", "entry without filename")
        path = Path(self.images) / filename
        if not path.is_file():
            raise Skip("missing_image", f"{filename}: file not found")
        captions = list(row.captions)
        caption = _caption(captions[0] if captions else None)
        meta: dict[str, Any] = {"id": filename, **resolution_meta(0.0, None), **_location(None, None)}
        meta.update(
            quality=None,
            source=self.name,
            modality="rgb",
            split=row.split,
            scene_class=row.scene_class,
            captions=captions,
        )
        return Record(path.read_bytes(), caption, meta)
