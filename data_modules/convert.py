"""``text2earth data convert``: a source dataset -> size-bounded webdataset shards ``{prefix}-%06d.tar``.

Every sample gets one layout whatever its source: ``{key}.jpg|png|webp`` (the original bytes when the
loader reads the format, else re-encoded as PNG), ``{key}.txt`` (caption) and ``{key}.json`` (``id``,
``gsd_m``, ``level``, ``lat``, ``lon``, ``quality``, ``source``, ``modality``, ``width``, ``height`` and
source extras such as the RSICD split and scene class). Level 0 means unknown and has ``gsd_m`` null.

How it runs: the source's rows are cut into tasks (contiguous row ranges) that worker processes convert
independently into parts under ``OUT/.parts/``; each task ends by atomically writing a marker with its
counts and skips. The marker is the commit point, so an interrupted run resumes by keeping every
finished task and redoing the others. When all tasks are done, the parts are renamed in task order to
``{prefix}-%06d.tar`` (numbering therefore does not depend on worker scheduling), and ``manifest.json``
(samples, bytes, per-level / per-source counts, shards and samples per shard, skips by reason) and ``skipped.jsonl`` (one line
per skipped row: reason, id, input, row, detail) are written. A shard closes at ``shard_count`` samples
or before it would pass ``shard_bytes``; the last shard of each task may be smaller.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import shutil
import sys
from collections import Counter
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import PIL.Image
import webdataset as wds
from tqdm.auto import tqdm

from data_modules.convert_sources import FolderSource, Git10mSource, RsicdSource, Skip, Task
from text2earth.io.files import atomic_path, write_atomic
from text2earth.io.images import ImageReadError, decode_rgb
from text2earth.io.shards import SHARD_SAMPLES_KEY, count_shard_samples

FORMAT = "text2earth-convert-v1"
PARTS = ".parts"
# Formats the DataModule decodes: their bytes are kept unchanged; anything else is re-encoded as PNG.
KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
Source = Git10mSource | FolderSource | RsicdSource


def _tar_size(payload: int) -> int:
    return 512 + -(-payload // 512) * 512  # header + data padded to whole blocks


def _tar_file_size(members: int) -> int:
    return -(-(members + 1024) // 10240) * 10240  # end-of-archive blocks, padded to tar's 10 KiB records


def encode_image(data: bytes, name: str) -> tuple[str, bytes, dict[str, int]]:
    """``(extension, bytes, {"width", "height"})``; the full decode catches truncated / corrupt files."""
    try:
        rgb = decode_rgb(data, name)
    except ImageReadError as exc:
        raise Skip("undecodable_image", str(exc)) from None
    with PIL.Image.open(io.BytesIO(data)) as image:
        fmt = image.format
    size = {"width": rgb.width, "height": rgb.height}
    if fmt in KEPT_FORMATS:
        return KEPT_FORMATS[fmt], data, size
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    return "png", buffer.getvalue(), size


class _PartWriter:
    """A task's parts: tar files closed at ``max_count`` samples or before passing ``max_bytes``
    (a single sample larger than the bound gets a shard of its own)."""

    def __init__(self, folder: Path, task: int, max_count: int, max_bytes: int) -> None:
        self.folder, self.task, self.max_count, self.max_bytes = folder, task, max_count, max_bytes
        self.names: list[str] = []
        self.counts: list[int] = []  # samples per part, for the manifest's shard_samples
        self._stack: contextlib.ExitStack | None = None
        self._sink: wds.TarWriter | None = None
        self._count = self._bytes = 0

    def write(self, sample: dict[str, Any], size: int) -> None:
        full = self._count >= self.max_count or _tar_file_size(self._bytes + size) > self.max_bytes
        if self._sink is not None and full:
            self.close()
        if self._sink is None:
            name = f"{self.task:06d}-{len(self.names):04d}.tar"
            self._stack = contextlib.ExitStack()
            tmp = self._stack.enter_context(atomic_path(self.folder / name))
            self._sink = wds.TarWriter(str(tmp), mtime=0)  # reproducible; an int (a float adds PAX headers)
            self.names.append(name)
            self.counts.append(0)
            self._count = self._bytes = 0
        self._sink.write(sample)
        self.counts[-1] += 1
        self._count += 1
        self._bytes += size

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._stack.close()  # renames the finished part into place
            self._sink = self._stack = None

    def abort(self) -> None:
        if self._stack is not None:
            self._sink.close()
            self._stack.__exit__(*sys.exc_info())  # removes the unfinished part
            self._sink = self._stack = None


def _skip_entry(skip: Skip, task: Task, row_index: int, row: dict[str, Any] | None) -> dict[str, Any]:
    ident = None
    if isinstance(row, dict):
        ident = next(
            (row[k] for k in ("img_name", "filename", "image", "file", "path", "id") if isinstance(row.get(k), str)),
            None,
        )
    return {"reason": skip.reason, "id": ident, "input": task.path, "row": row_index, "detail": skip.detail[:300]}


def convert_task(source: Source, folder: Path, max_count: int, max_bytes: int, task: Task) -> dict[str, Any]:
    """Convert one task into parts under ``folder``; returns (and atomically writes) its marker."""
    counts: dict[str, Counter] = {"level": Counter(), "source": Counter(), "modality": Counter()}
    skipped: list[dict[str, Any]] = []
    writer = _PartWriter(folder, task.index, max_count, max_bytes)
    samples = 0
    try:
        try:
            rows = source.rows(task)
        except (OSError, ValueError) as exc:  # unreadable input file: every row of the task is skipped
            rows = []
            skip = Skip("unreadable_input", f"{type(exc).__name__}: {exc}")
            skipped.extend(_skip_entry(skip, task, task.start + i, None) for i in range(task.stop - task.start))
        for i, row in enumerate(rows):
            row_index = task.start + i
            try:
                record = source.record(row, task, row_index)
                ext, image, size = encode_image(record.image, f"{task.path}:{row_index}")
            except Skip as skip:
                skipped.append(_skip_entry(skip, task, row_index, row))
                continue
            meta = {**record.meta, **size}
            payloads = {
                ext: image,
                "txt": record.caption.encode("utf-8"),
                "json": json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8"),
            }
            sample = {"__key__": f"{source.name}_{task.first_key + i:09d}", **payloads}
            writer.write(sample, sum(_tar_size(len(v)) for v in payloads.values()))
            samples += 1
            counts["level"][f"{meta['level']:g}"] += 1
            counts["source"][meta["source"]] += 1
            counts["modality"][meta["modality"]] += 1
        writer.close()
    except BaseException:
        writer.abort()
        raise
    marker = {
        "task": task.index,
        "rows": task.stop - task.start,
        "samples": samples,
        "parts": writer.names,
        "part_samples": writer.counts,
        "counts": {k: dict(v) for k, v in counts.items()},
        "skipped": skipped,
    }
    write_atomic(folder / f"{task.index:06d}.json", json.dumps(marker, ensure_ascii=False).encode("utf-8"))
    return marker


def _settings(source: Source, prefix: str, shard_count: int, shard_bytes: int, rows_per_task: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "source_kind": source.kind,
        "source": asdict(source),
        "prefix": prefix,
        "shard_count": shard_count,
        "shard_bytes": shard_bytes,
        "rows_per_task": rows_per_task,
    }


def _check_settings(path: Path, settings: dict[str, Any], what: str) -> bool:
    """True when ``path`` exists with these settings; ``ValueError`` when it holds different ones."""
    if not path.is_file():
        return False
    found = json.loads(path.read_text(encoding="utf-8")).get("settings")
    if found != settings:
        raise ValueError(
            f"{path.parent} holds {what} with different settings ({path.name}); use another --out or delete it"
        )
    return True


def convert(
    source: Source,
    out_dir: str | Path,
    prefix: str = "train",
    shard_count: int = 10_000,
    shard_bytes: int = 1_000_000_000,
    rows_per_task: int | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Convert ``source`` into ``out_dir/{prefix}-%06d.tar`` + ``manifest.json``; resumes; returns the manifest."""
    if shard_count < 1 or shard_bytes < 4096:
        raise ValueError(f"shard_count must be >= 1 and shard_bytes >= 4096, got {shard_count}, {shard_bytes}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not prefix or "/" in prefix or "." in prefix:
        raise ValueError(f"prefix must be a plain name without '/' or '.', got {prefix!r}")
    rows_per_task = rows_per_task or shard_count
    out = Path(out_dir)
    settings = _settings(source, prefix, shard_count, shard_bytes, rows_per_task)
    if _check_settings(out / "manifest.json", settings, "a finished conversion"):
        return json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    parts = out / PARTS
    unfinished = _check_settings(parts / "settings.json", settings, "an unfinished conversion")
    # The source is read (and a bad input path fails) before anything is written: a failed command leaves
    # no settings behind that would block the corrected one.
    tasks = source.tasks(rows_per_task)
    if not tasks:
        raise ValueError(f"the source has no rows: {settings['source']}")
    parts.mkdir(parents=True, exist_ok=True)
    if not unfinished:
        write_atomic(parts / "settings.json", json.dumps({"settings": settings}, indent=2).encode("utf-8"))
    done = {t.index for t in tasks if (parts / f"{t.index:06d}.json").is_file()}
    pending = [t for t in tasks if t.index not in done]
    for task in pending:  # parts of a task that never wrote its marker are incomplete: redo the task
        for stale in parts.glob(f"{task.index:06d}-*.tar"):
            stale.unlink()
    bar = tqdm(
        total=sum(t.stop - t.start for t in tasks),
        initial=sum(t.stop - t.start for t in tasks if t.index in done),
        desc=f"convert {source.kind}",
        unit="row",
        disable=None if progress else True,
    )
    run = partial(convert_task, source, parts, shard_count, shard_bytes)
    if workers == 1 or len(pending) <= 1:
        for task in pending:
            bar.update(run(task)["rows"])
    else:
        with multiprocessing.get_context("fork").Pool(min(workers, len(pending))) as pool:
            for marker in pool.imap_unordered(run, pending):
                bar.update(marker["rows"])
    bar.close()
    return _finalise(tasks, out, parts, settings)


def _finalise(tasks: list[Task], out: Path, parts: Path, settings: dict[str, Any]) -> dict[str, Any]:
    markers = [json.loads((parts / f"{t.index:06d}.json").read_text(encoding="utf-8")) for t in tasks]
    prefix = settings["prefix"]
    shards: list[str] = []
    shard_samples: dict[str, int] = {}
    for marker in markers:
        # Markers of an older version (a resumed conversion) lack part_samples: those parts are counted.
        counts = marker.get("part_samples") or [None] * len(marker["parts"])
        for part, count in zip(marker["parts"], counts, strict=True):
            final = out / f"{prefix}-{len(shards):06d}.tar"
            if (parts / part).is_file() or not final.is_file():  # else renamed by an interrupted finalise
                (parts / part).replace(final)
            shards.append(final.name)
            shard_samples[final.name] = count_shard_samples(final) if count is None else count
    totals: dict[str, Counter] = {"level": Counter(), "source": Counter(), "modality": Counter()}
    reasons: Counter = Counter()
    with atomic_path(out / "skipped.jsonl") as tmp, tmp.open("w", encoding="utf-8") as report:
        for marker in markers:
            for key, counter in totals.items():
                counter.update(marker["counts"][key])
            for entry in marker["skipped"]:
                reasons[entry["reason"]] += 1
                report.write(json.dumps(entry, ensure_ascii=False) + "\n")
    manifest = {
        "format": FORMAT,
        "settings": settings,
        "rows": sum(m["rows"] for m in markers),
        "samples": sum(m["samples"] for m in markers),
        "bytes": sum((out / s).stat().st_size for s in shards),
        "shards": shards,
        # Samples per shard: a reader that meets a damaged shard counts what it lost (text2earth.io.shards).
        SHARD_SAMPLES_KEY: shard_samples,
        "counts": {
            "level": dict(sorted(totals["level"].items(), key=lambda kv: float(kv[0]))),
            "source": dict(sorted(totals["source"].items())),
            "modality": dict(sorted(totals["modality"].items())),
        },
        "skipped": dict(sorted(reasons.items())),
        "skipped_report": "skipped.jsonl",
    }
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"))
    shutil.rmtree(parts)
    return manifest
