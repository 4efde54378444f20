"""The one argument-parser style of every ``text2earth`` subcommand: defaults shown, descriptions kept as written."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` to every option that has a real default (not None, not a False switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in help_text:
            return help_text
        return super()._get_help_string(action) or help_text


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with :class:`HelpFormatter` and a usage mistake reported as one line (the usage block
    stays behind ``--help``); subparsers inherit the class, hence both."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"text2earth: error: {self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def out_option(parser: argparse.ArgumentParser, what: str, name: str, suffix: str = "") -> None:
    """``--out``, defaulting to a new ``outputs/NAME/DATE_TIME[SUFFIX]`` in the project (gitignored): runs
    that leave it out never overwrite one another."""
    parser.add_argument(
        "--out", default=None, help=f"{what} (default: outputs/{name}/DATE_TIME{suffix} in the project)"
    )
    parser.set_defaults(out_default=(name, suffix))


def fill_default_out(args: argparse.Namespace) -> None:
    """Give ``args.out`` its default from :func:`out_option` when the command line left it out."""
    if getattr(args, "out", None) is None and getattr(args, "out_default", None):
        import time

        from text2earth.core.paths import project_root

        name, suffix = args.out_default
        args.out = str(project_root() / "outputs" / name / (time.strftime("%Y-%m-%d_%H-%M-%S") + suffix))
