"""The project's user-error type: what the CLI reports as one line on stderr with exit code 2.

``UserError`` subclasses ``ValueError`` so that library callers who catch ``ValueError`` keep working.
Library code raises ``ValueError`` / ``FileNotFoundError`` for bad input too (the standard meaning);
``USER_ERRORS`` is the one list of exception types the entry points turn into that one line.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in what the user asked for (a path, a value, a file, an override)."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError, NotADirectoryError)
