"""Shard specifications (pattern, glob, folder, list, list file, manifest) -> shard URLs, and the one plain reader.

``read_shard_samples`` / ``iter_samples`` are for tools, evaluation and tests that walk shards in file order;
training streams through webdataset pipelines (split by node and worker, shuffled) instead.

Damaged shards: the writers record each shard's sample count in their manifest (``shard_samples``), so a
reader that meets a truncated shard counts the samples it lost (``ShardDamaged``), not one per shard.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import braceexpand

from text2earth.core.errors import UserError

_REMOTE_PREFIXES = ("pipe:", "http://", "https://", "s3://", "gs://", "hf://")
_GLOB_CHARS = set("*?[")


def _is_remote(spec: str) -> bool:
    return spec.startswith(_REMOTE_PREFIXES)


ALLOW_PIPE_ENV = "TEXT2EARTH_ALLOW_PIPE"


def _check_pipe(spec: str, base: Path | None) -> None:
    """A ``pipe:`` URL runs a shell command: one read from a file (a manifest or a list someone sent) is
    refused unless the user opts in; one typed by the user (``base`` None) is their own command."""
    if spec.startswith("pipe:") and base is not None and os.environ.get(ALLOW_PIPE_ENV) != "1":
        raise UserError(
            f"a shard list in {base} names a shell command ({spec[:60]!r}): refused, since reading data must not run "
            f"commands; if you trust it, set {ALLOW_PIPE_ENV}=1"
        )


def _expand_one(spec: str, split: str | None, base: Path | None) -> list[str]:
    spec = os.path.expandvars(os.path.expanduser(spec.strip()))
    if not spec:
        return []
    _check_pipe(spec, base)
    if _is_remote(spec):  # webdataset opens these itself; nothing to check on disk
        return list(braceexpand.braceexpand(spec))
    if base is not None and not os.path.isabs(spec):
        spec = str(base / spec)
    path = Path(spec)
    if path.is_dir():
        pattern = f"{split}-*.tar" if split else "*.tar"
        return sorted(str(p) for p in path.glob(pattern))
    if path.suffix == ".txt" and path.is_file():
        return _read_list(path, split)
    if path.suffix == ".json" and path.is_file():
        return _read_manifest(path, split)
    urls: list[str] = []
    for part in braceexpand.braceexpand(spec):
        if _GLOB_CHARS & set(part):
            urls.extend(sorted(glob.glob(part)))
        elif Path(part).is_file():
            urls.append(part)
        else:
            raise FileNotFoundError(f"shard {part!r} (from {spec!r}) does not exist")
    return urls


def _read_list(path: Path, split: str | None) -> list[str]:
    """One shard (or pattern) per line; blank lines and ``#`` comments skipped; relative to the file."""
    urls: list[str] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            urls.extend(_expand_one(line, split, path.parent))
    return urls


def _read_manifest(path: Path, split: str | None) -> list[str]:
    """The ``shards`` of a ``manifest.json`` (a list, or lists per split), relative to its folder."""
    try:
        shards = json.loads(path.read_text())["shards"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise FileNotFoundError(f"{path} is not a manifest with a 'shards' list: {exc}") from None
    if isinstance(shards, dict):
        shards = [s for name, items in shards.items() if split in (None, name) for s in items]
    return [u for s in shards for u in _expand_one(s, split, path.parent)]


def expand_shards(spec: str | Path | Iterable[str | Path], split: str | None = None) -> list[str]:
    """The shard URLs a specification names, in a stable order.

    ``spec`` may be a brace pattern (``data/train-{000000..000003}.tar``), a glob
    (``data/train-*.tar``), a directory (with ``split``: ``{split}-*.tar`` in it, else every
    ``*.tar``), a ``.txt`` file listing any of these one per line, a list of any of these, or a
    ``pipe:`` / ``http(s)://`` URL (passed through, braces expanded), or a ``manifest.json`` of
    ``text2earth data convert`` / the embedded builder (its shards; with ``split``, that split's). Raises ``FileNotFoundError``
    when nothing matches or a named local shard is missing, so a wrong path fails at start-up
    instead of as an empty epoch.
    """
    if spec is None:
        raise FileNotFoundError("no shard specification given (None)")
    if isinstance(spec, (str, Path)):
        urls = _expand_one(str(spec), split, None)
    else:
        urls = []
        for item in spec:
            urls.extend(_expand_one(str(item), split, None))
    if not urls:
        where = f" (split {split!r})" if split else ""
        raise FileNotFoundError(f"no shards match {spec!r}{where}: check the path, pattern or list file")
    seen: set[str] = set()
    return [u for u in urls if not (u in seen or seen.add(u))]  # drop duplicates, keep order


def read_shard_samples(url: str | Path) -> Iterator[dict[str, Any]]:
    """Raw samples (``{"__key__": key, ext: bytes}``) of one shard, in file order.

    The key is a member's base name up to its first dot, as webdataset groups them. ``pipe:`` and
    ``http(s)://`` URLs are streamed through webdataset's ``gopen``.
    """
    url = str(url)
    if _is_remote(url):
        import webdataset as wds  # only for remote shards: local ones need nothing but tarfile

        tar = tarfile.open(fileobj=wds.gopen(url), mode="r|*")  # noqa: SIM115 (closed by the with below)
    else:
        tar = tarfile.open(url)  # noqa: SIM115
    current: dict[str, Any] = {}
    with tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = os.path.basename(member.name).partition(".")
            if current and current["__key__"] != key:
                yield current
                current = {}
            current["__key__"] = key
            handle = tar.extractfile(member)
            current[ext] = handle.read() if handle is not None else b""
    if current:
        yield current


def count_shard_samples(path: str | Path) -> int:
    """The number of samples in a local shard, from its member headers (no member data is read)."""
    keys = 0
    previous = None
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key = os.path.basename(member.name).partition(".")[0]  # grouped as read_shard_samples does
            if key != previous:
                keys, previous = keys + 1, key
    return keys


# -- damaged shards: how many samples did a shard lose -----------------------------------------------
# What reading a damaged shard raises (truncated, not a tar, unreadable); anything else is a bug or a bad sample.
SHARD_READ_ERRORS: tuple[type[BaseException], ...] = (tarfile.TarError, OSError, EOFError)
SHARD_SAMPLES_KEY = "shard_samples"
# The files a writer leaves beside its shards that record per-shard counts: ``data convert`` and the embedded
# builder write manifest.json, ``data cache-latents`` latent_cache.json.
COUNT_MANIFESTS = ("manifest.json", "latent_cache.json")

_counts_cache: dict[str, tuple[tuple, dict[str, int]]] = {}


def _folder_counts(folder: str) -> dict[str, int]:
    """``{absolute shard path: samples}`` from the manifests in ``folder``, read once per folder (and again
    only when a manifest there changes)."""
    stamps = []
    for name in COUNT_MANIFESTS:
        try:
            st = os.stat(os.path.join(folder, name))
            stamps.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            stamps.append((name, None, None))
    signature = tuple(stamps)
    cached = _counts_cache.get(folder)
    if cached is not None and cached[0] == signature:
        return cached[1]
    counts: dict[str, int] = {}
    for name, mtime, _size in stamps:
        if mtime is None:
            continue
        try:
            recorded = json.loads(Path(folder, name).read_text(encoding="utf-8")).get(SHARD_SAMPLES_KEY)
        except (OSError, ValueError, AttributeError):
            continue  # an unreadable or foreign manifest says nothing about counts: fall back to "at least one"
        if not isinstance(recorded, dict):
            continue  # a manifest written before shard_samples existed
        for shard, n in recorded.items():
            if isinstance(shard, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                counts.setdefault(os.path.normpath(os.path.join(folder, shard)), n)
    _counts_cache[folder] = (signature, counts)
    return counts


def expected_samples(url: str | Path) -> int | None:
    """The sample count the writer recorded for shard ``url`` (``shard_samples`` of a manifest in the shard's
    own folder), or ``None`` when none is recorded (remote shards, shards without a manifest, old manifests)."""
    url = str(url)
    if _is_remote(url):
        return None
    path = os.path.normpath(os.path.abspath(url))
    return _folder_counts(os.path.dirname(path)).get(path)


class ShardDamaged(Exception):
    """A shard that could not be read to its end, passed to skip handlers in place of the read error.

    ``delivered``: the samples the reader delivered from it before the damage (``read_shard_samples`` never
    delivers the sample the damage cut into); ``lost``: ``expected - delivered`` when the shard's count is
    recorded, else ``None`` (unknown: at least one); ``counted``: what a skip counter adds, ``lost`` or 1.
    """

    def __init__(self, url: str, delivered: int, cause: BaseException) -> None:
        self.url, self.delivered, self.cause = str(url), delivered, cause
        self.expected = expected_samples(url)
        # A manifest older than the shard could record fewer samples than were read: nothing provably lost.
        self.lost = None if self.expected is None else max(0, self.expected - delivered)
        super().__init__(self.describe())

    @property
    def counted(self) -> int:
        return 1 if self.lost is None else self.lost

    def describe(self) -> str:
        cause = f"{type(self.cause).__name__}: {self.cause}"[:300]
        if self.lost is None:
            what = f"{self.delivered} samples read, at least 1 lost (no manifest beside it records its count)"
        else:
            what = f"{self.delivered} of its {self.expected} samples read, {self.lost} lost"
        return f"shard {self.url} is damaged ({cause}): {what}"


def iter_samples(
    spec: str | Path | Iterable[str | Path],
    split: str | None = None,
    handler: Callable[[BaseException], bool] | None = None,
) -> Iterator[dict[str, Any]]:
    """Raw samples of every shard ``spec`` names (see ``expand_shards``), shard after shard, in file order.

    A shard that cannot be read (truncated, not a tar) raises, unless ``handler`` is given and
    ``handler(ShardDamaged(...))`` returns True: then the rest of that shard is skipped, and the handler
    (a skip counter) is told how many samples it lost.
    """
    for url in expand_shards(spec, split=split):
        delivered = 0
        try:
            for sample in read_shard_samples(url):
                delivered += 1
                yield sample
        except SHARD_READ_ERRORS as exc:
            if handler is None or not handler(ShardDamaged(url, delivered, exc)):
                raise
