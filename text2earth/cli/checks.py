"""What the console script checks before any slow work, and how it words what went wrong.

Each ``before_*`` runs first in its subcommand: values that cannot work and outputs that cannot be written
fail in a second, before a model loads or sampling starts. :func:`error_line` turns any user error (ours, an
operating-system error) into the one line the CLI prints; :class:`text2earth.cli.parser.Parser` words
argparse mistakes the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from text2earth.core.errors import UserError, describe_os_error
from text2earth.io.device import pick_device
from text2earth.io.outputs import check_output_file, check_writable_folder

PNG = (".png",)


def error_line(exc: BaseException) -> str:
    """The one line for a user error: OS errors in words, never ``[Errno N]`` or a class name."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return describe_os_error(exc)
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def positive(**values: int | float | None) -> None:
    for flag, value in values.items():
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")


def before_generate(args: argparse.Namespace) -> None:
    pick_device(args.device)  # cheap; a missing GPU is reported before any model loads
    positive(n=args.n, steps=args.steps, height=args.height, width=args.width)
    check_writable_folder(args.out)


def before_edit(args: argparse.Namespace) -> None:
    pick_device(args.device)  # cheap; a missing GPU is reported before any model loads
    positive(steps=args.steps)
    check_output_file(args.out, PNG, what="the edited image (with its metadata)")


def before_outpaint(args: argparse.Namespace) -> None:
    pick_device(args.device)  # cheap; a missing GPU is reported before any model loads
    positive(
        steps=args.steps,
        width=args.width,
        height=args.height,
        window=args.window,
        windows_per_call=args.windows_per_call,
    )
    if not 0 <= args.overlap < args.window:
        raise UserError(
            f"--overlap must lie in 0..{args.window - 1} (less than --window {args.window}), got {args.overlap}"
        )
    check_output_file(args.out, PNG, what="the canvas (with its .json report beside it)")


def before_translate(args: argparse.Namespace) -> None:
    pick_device(args.device)  # cheap; a missing GPU is reported before any model loads
    from text2earth.io.bands import TASKS, check_task

    check_task(args.task)
    positive(steps=args.steps)
    single_band = TASKS[args.task][1] != "rgb"
    suffixes = (".png", ".tif", ".tiff") if single_band else PNG
    check_output_file(args.out, suffixes, what=f"a {args.task} result")


def before_export(args: argparse.Namespace) -> None:
    out = Path(args.out).expanduser()
    check_writable_folder(out)
    # The export replaces the folder whole: never a folder that is not a model (someone's other files).
    if out.is_dir() and any(out.iterdir()) and not (out / "model_index.json").is_file():
        raise UserError(f"--out {out} exists and is not a model folder: refusing to replace it (name a new folder)")
