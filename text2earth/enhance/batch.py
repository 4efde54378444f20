"""Enhance many images: a folder tree (relative paths kept) or webdataset shards (shard -> shard).

Both resume by skipping outputs that already exist: every output is written under a temporary name and renamed,
so an existing output is always complete. Unreadable inputs are skipped, counted and listed in
``enhance_failed.txt`` in the output folder instead of stopping a long run.
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from text2earth.core.resolution import UNKNOWN_LEVEL, gsd_to_level, level_to_gsd
from text2earth.enhance.imagefiles import IMAGE_SUFFIXES, ImageMeta, decode, encode
from text2earth.enhance.tiling import upscale
from text2earth.io.files import atomic_path, write_atomic
from text2earth.io.images import ImageReadError
from text2earth.models.rrdbnet import RRDBNet

FAILED_LIST = "enhance_failed.txt"


@dataclass
class Report:
    done: int = 0
    skipped: int = 0  # finished by an earlier run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (relative path or shard:key, reason)

    def summary(self) -> str:
        return f"{self.done} enhanced, {self.skipped} already done, {len(self.failed)} unreadable"


class Enhancer:
    """Runs batches of decoded images through the network (tiled), optionally resized to ``outscale``."""

    def __init__(
        self,
        net: RRDBNet,
        device: str | torch.device = "cpu",
        half: bool = False,
        tile: int | None = 256,
        overlap: int = 16,
        batch_size: int = 16,
        outscale: float | None = None,
    ) -> None:
        self.net = net.to(device=device, dtype=torch.float16 if half else torch.float32).eval()
        self.tile, self.overlap, self.batch_size = tile, overlap, batch_size
        self.outscale = float(outscale) if outscale else float(net.scale)

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """RGB float (H, W, 3) arrays in, enhanced arrays out, in the same order; equal sizes share a batch."""
        out: list[np.ndarray | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(images):
            by_shape.setdefault(img.shape, []).append(i)
        for indices in by_shape.values():
            # Whole images are assembled on the CPU; only tiles travel to the device (bounded device memory).
            x = torch.from_numpy(np.stack([images[i] for i in indices])).permute(0, 3, 1, 2)
            y = upscale(self.net, x, self.tile, self.overlap, self.batch_size)
            h, w = x.shape[-2:]
            size = (max(1, round(h * self.outscale)), max(1, round(w * self.outscale)))
            if size != tuple(y.shape[-2:]):
                y = F.interpolate(y, size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
            for i, arr in zip(indices, y.permute(0, 2, 3, 1).numpy(), strict=True):
                out[i] = arr
        return out  # type: ignore[return-value]


def _prefetch(executor: ThreadPoolExecutor, fn: Callable, items: Iterable, depth: int) -> Iterator[tuple]:
    """(item, future) in order with at most ``depth`` decodes in flight: bounded memory on huge folders."""
    queue: deque[tuple[object, Future]] = deque()
    for item in items:
        queue.append((item, executor.submit(fn, item)))
        if len(queue) >= depth:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def _write_failed(output_dir: Path, failed: list[tuple[str, str]]) -> None:
    path = output_dir / FAILED_LIST
    if failed:
        write_atomic(path, "".join(f"{name}\t{reason}\n" for name, reason in failed).encode())
    else:
        path.unlink(missing_ok=True)


def find_images(input_dir: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under ``input_dir`` (recursive, sorted), skipping the folder ``exclude``."""
    files = []
    for root, dirs, names in os.walk(input_dir):
        root_path = Path(root)
        # An output folder inside the input folder must not be read back as input on a rerun.
        dirs[:] = sorted(d for d in dirs if exclude is None or (root_path / d).resolve() != exclude)
        files += [root_path / n for n in sorted(names) if Path(n).suffix.lower() in IMAGE_SUFFIXES]
    return files


def enhance_folder(
    input_dir: str | Path,
    output_dir: str | Path,
    enhancer: Enhancer,
    jpeg_quality: int = 95,
    workers: int = 4,
    progress: bool = True,
) -> Report:
    """Enhance every PNG/JPEG/TIFF under ``input_dir`` into the same relative path under ``output_dir``."""
    input_dir, output_dir = Path(input_dir).resolve(), Path(output_dir).resolve()
    if not input_dir.is_dir():
        raise NotADirectoryError(f"input folder not found: {input_dir}")
    if output_dir == input_dir:
        raise ValueError("--out must differ from --input-dir (outputs keep the input file names)")
    report = Report()
    todo = []
    for src in find_images(input_dir, exclude=output_dir):
        dst = output_dir / src.relative_to(input_dir)
        if dst.exists():
            report.skipped += 1
        else:
            todo.append((src, dst))
    output_dir.mkdir(parents=True, exist_ok=True)

    def read(job: tuple[Path, Path]) -> tuple[np.ndarray, ImageMeta] | Exception:
        try:
            return decode(job[0])
        except ImageReadError as exc:
            return exc

    def write(dst: Path, rgb: np.ndarray, meta: ImageMeta) -> None:
        write_atomic(dst, encode(rgb, meta, jpeg_quality))

    bar = tqdm(total=len(todo), desc="enhance", unit="img", disable=None if progress else True)
    bs = enhancer.batch_size
    with ThreadPoolExecutor(max_workers=workers) as pool:
        writes: deque[Future] = deque()
        batch: list[tuple[Path, np.ndarray, ImageMeta]] = []

        def flush() -> None:
            outputs = enhancer([rgb for _, rgb, _ in batch])
            for (dst, _, meta), out in zip(batch, outputs, strict=True):
                writes.append(pool.submit(write, dst, out, meta))
            while len(writes) > 2 * bs:  # surface write errors early, keep memory bounded
                writes.popleft().result()
            report.done += len(batch)
            bar.update(len(batch))
            batch.clear()

        for (src, dst), future in _prefetch(pool, read, todo, depth=2 * bs):
            result = future.result()
            if isinstance(result, Exception):
                report.failed.append((str(src.relative_to(input_dir)), str(result)))
                bar.update(1)
                continue
            batch.append((dst, *result))
            if len(batch) == bs:
                flush()
        if batch:
            flush()
        for f in writes:
            f.result()
    bar.close()
    _write_failed(output_dir, report.failed)
    return report


# -- shards ---------------------------------------------------------------------------------------------------


def _sample_key(name: str) -> tuple[str, str]:
    """webdataset's split of a member name: key = path up to the first dot of the file name, rest = extension."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def _iter_samples(tar: tarfile.TarFile) -> Iterator[tuple[str, list[tuple[tarfile.TarInfo, bytes]]]]:
    key, members = None, []
    for info in tar:
        if not info.isfile():
            continue
        k, _ = _sample_key(info.name)
        if key is not None and k != key:
            yield key, members
            members = []
        key = k
        members.append((info, tar.extractfile(info).read()))
    if key is not None:
        yield key, members


def update_resolution(meta: dict, outscale: float) -> dict:
    """Metadata after resampling by ``outscale``: finer ground sample distance, higher zoom level.

    Unknown values (missing, null, level 0) stay unknown."""
    meta = dict(meta)
    gsd, level = meta.get("gsd_m"), meta.get("level")
    known_gsd = isinstance(gsd, int | float) and gsd > 0
    if known_gsd:
        meta["gsd_m"] = gsd / outscale
    if isinstance(level, int | float) and level != UNKNOWN_LEVEL:
        meta["level"] = gsd_to_level(meta["gsd_m"] if known_gsd else level_to_gsd(level) / outscale)
    return meta


def _prepare_sample(
    members: list[tuple[tarfile.TarInfo, bytes]], outscale: float
) -> tuple[int, np.ndarray, ImageMeta, list[tuple[tarfile.TarInfo, bytes]]]:
    """Decode a sample's image and rewrite its json ahead of the network, so that a bad sample fails alone.

    The image is the member whose whole extension is an image type (``png``, ``jpg`` ...); members such as
    ``nir.png`` are extra bands and are copied unchanged, like the caption.
    """
    image_exts = {s.lstrip(".") for s in IMAGE_SUFFIXES}
    idx = next((j for j, (i, _) in enumerate(members) if _sample_key(i.name)[1].lower() in image_exts), None)
    if idx is None:
        raise ImageReadError("no image member")
    ext = _sample_key(members[idx][0].name)[1].lower()
    rgb, meta = decode(members[idx][1], IMAGE_SUFFIXES["." + ext])
    if not math.isclose(outscale, 1.0):
        members = [
            (info, json.dumps(update_resolution(json.loads(data), outscale)).encode())
            if _sample_key(info.name)[1] == "json"
            else (info, data)
            for info, data in members
        ]
    return idx, rgb, meta, members


def _enhance_shard(src: Path, dst: Path, enhancer: Enhancer, jpeg_quality: int, report: Report, bar: tqdm) -> None:
    with atomic_path(dst) as tmp, tarfile.open(src, "r:*") as tin, tarfile.open(tmp, "w") as tout:
        pending: list[tuple[int, np.ndarray, ImageMeta, list[tuple[tarfile.TarInfo, bytes]]]] = []

        def flush() -> None:
            outputs = enhancer([p[1] for p in pending])
            for (idx, _, meta, members), out in zip(pending, outputs, strict=True):
                for j, (info, data) in enumerate(members):
                    data = encode(out, meta, jpeg_quality) if j == idx else data
                    new = tarfile.TarInfo(info.name)
                    new.size, new.mtime, new.mode = len(data), info.mtime, info.mode
                    tout.addfile(new, io.BytesIO(data))
            report.done += len(pending)
            bar.update(len(pending))
            pending.clear()

        for key, members in _iter_samples(tin):
            try:
                pending.append(_prepare_sample(members, enhancer.outscale))
            except ValueError as exc:  # ImageReadError, bad json, a level out of range
                report.failed.append((f"{src.name}:{key}", str(exc)))
                continue
            if len(pending) == enhancer.batch_size:
                flush()
        if pending:
            flush()


def enhance_shards(
    shards: list[Path], output_dir: str | Path, enhancer: Enhancer, jpeg_quality: int = 95, progress: bool = True
) -> Report:
    """Enhance webdataset shards: every sample's image is replaced by its enhanced version, other members
    (caption, json) are copied, with ``gsd_m``/``level`` in the json updated when the pixel size changes.
    Output shards keep their file names; an existing output shard counts as done."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = Report()
    bar = tqdm(desc="enhance", unit="img", disable=None if progress else True)
    for src in shards:
        dst = output_dir / src.name
        if dst.resolve() == src.resolve():
            raise ValueError(f"output shard would overwrite its input: {src}")
        if dst.exists():
            report.skipped += 1
            continue
        try:
            _enhance_shard(src, dst, enhancer, jpeg_quality, report, bar)
        except (tarfile.TarError, EOFError) as exc:
            report.failed.append((src.name, f"unreadable shard: {exc}"))
    bar.close()
    _write_failed(output_dir, report.failed)
    return report
