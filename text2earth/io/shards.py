"""Shard specifications (pattern, glob, folder, list, list file, manifest) -> shard URLs, and the one plain reader.

``read_shard_samples`` / ``iter_samples`` are for tools, evaluation and tests that walk shards in file order;
training streams through webdataset pipelines (split by node and worker, shuffled) instead.
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


def iter_samples(
    spec: str | Path | Iterable[str | Path],
    split: str | None = None,
    handler: Callable[[BaseException], bool] | None = None,
) -> Iterator[dict[str, Any]]:
    """Raw samples of every shard ``spec`` names (see ``expand_shards``), shard after shard, in file order.

    A shard that cannot be read (truncated, not a tar) raises, unless ``handler(exc)`` returns True:
    then the rest of that shard is skipped (a counted skip, as webdataset's handlers do).
    """
    for url in expand_shards(spec, split=split):
        try:
            yield from read_shard_samples(url)
        except (tarfile.TarError, OSError, EOFError) as exc:
            if handler is None or not handler(exc):
                raise
