"""The one argument-parser style of every ``text2earth`` subcommand: defaults shown, descriptions kept as written."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` to every option that has a real default (not None, not a False switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in help_text:
            return help_text
        return super()._get_help_string(action) or help_text


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with :class:`HelpFormatter`; subparsers inherit the class, hence the formatter."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
