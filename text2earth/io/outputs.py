"""Checks that an output can be written, run before any model loads or sampling starts.

A mistake in ``--out`` (an existing folder where a file goes, a file where a folder goes, a suffix the writer
cannot produce, a read-only place) must cost the user seconds, not a finished run that then fails to save.
The checks write nothing: writability is probed with a temporary file that is removed at once (file modes
alone say nothing when running as root or on read-only mounts).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from text2earth.core.errors import UserError, describe_os_error


def _existing_ancestor(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable_folder(folder: str | Path, flag: str = "--out") -> Path:
    """``folder`` (which may not exist yet) can be created and written in; raises :class:`UserError` if not."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file, not a folder")
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise UserError(f"{flag} {folder}: {base} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {folder}: cannot write in {base} ({describe_os_error(exc).split(': ')[-1]})") from None
    return folder


def check_output_file(path: str | Path, suffixes: Iterable[str], flag: str = "--out", what: str = "the output") -> Path:
    """``path`` names a file with one of ``suffixes`` (``.png`` ...) in a writable folder; :class:`UserError` if not."""
    path = Path(path).expanduser()
    allowed = [s.lower() for s in suffixes]
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder: give a file name such as {path / ('result' + allowed[0])}")
    if path.suffix.lower() not in allowed:
        got = f"{path.suffix!r}" if path.suffix else "no suffix"
        raise UserError(f"{flag} {path}: {what} is written as {' or '.join(allowed)}, not {got}")
    check_writable_folder(path.parent, flag)
    return path
