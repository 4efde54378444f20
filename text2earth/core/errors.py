"""The project's user-error type: what the CLI reports as one line on stderr with exit code 2.

``UserError`` subclasses ``ValueError`` so that library callers who catch ``ValueError`` keep working.
Library code raises ``ValueError`` / ``FileNotFoundError`` for bad input too (the standard meaning);
``USER_ERRORS`` is the one list of exception types the entry points turn into that one line.
"""

from __future__ import annotations

import errno


class UserError(ValueError):
    """A mistake in what the user asked for (a path, a value, a file, an override)."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError, NotADirectoryError)


_ERRNO_WORDS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "not permitted (a read-only place?)",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOENT: "it does not exist",
    errno.EEXIST: "it already exists",
    errno.ENAMETOOLONG: "the name is too long",
}


def describe_os_error(exc: OSError) -> str:
    """An operating-system error in words, with the path it concerns (never ``[Errno N] ... PosixPath``)."""
    if exc.errno is None:  # raised by our code or a library with its own message
        return str(exc).splitlines()[0] if str(exc).strip() else "input/output error"
    words = _ERRNO_WORDS.get(exc.errno) or (exc.strerror or "input/output error").lower()
    where = exc.filename if exc.filename is not None else ""
    verb = "cannot write" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else "cannot use"
    return f"{verb} {str(where)!r}: {words}" if where != "" else words
