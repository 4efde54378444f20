"""``text2earth enhance``: folder -> folder (or shards -> shards) visual quality enhancement with an RRDBNet.

Registered into the project's console script by ``text2earth.cli.main`` (``register``). Bad input gives one line
on stderr and exit code 2 there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from text2earth.core.errors import UserError
from text2earth.io.outputs import check_writable_folder


def _expand(spec: str) -> list[Path]:
    from text2earth.io.shards import expand_shards  # raises FileNotFoundError when nothing matches

    urls = expand_shards(spec)
    remote = [u for u in urls if "://" in u or u.startswith("pipe:")]
    if remote:
        raise ValueError(f"shard mode reads and writes local shards only, got {remote[0]!r}")
    return [Path(u) for u in urls]


def run(args: argparse.Namespace) -> int:
    """The ``enhance`` subcommand; raises ValueError/FileNotFoundError for bad input (exit 2 in ``main``)."""

    from text2earth.enhance.batch import FAILED_LIST, Enhancer, enhance_folder, enhance_shards
    from text2earth.io.device import pick_device
    from text2earth.models.rrdbnet import load_rrdbnet

    device = str(pick_device(args.device))
    if args.half and not device.startswith("cuda"):
        raise ValueError("--half needs a CUDA device (float16 convolutions are not supported on the CPU)")
    if args.batch_size < 1 or (args.tile_size and args.tile_size < 8) or args.tile_overlap < 0:
        raise ValueError("--batch-size must be >= 1, --tile-size >= 8 (or 0 for whole images), --tile-overlap >= 0")
    if args.outscale is not None and args.outscale <= 0:
        raise ValueError("--outscale must be positive")
    if args.input_dir is not None and not Path(args.input_dir).is_dir():
        what = "is a file, not a folder" if Path(args.input_dir).exists() else "does not exist"
        raise UserError(f"--input-dir {args.input_dir} {what}")
    check_writable_folder(args.out, flag="--out")
    shards = _expand(args.input_shards) if args.input_shards else None
    try:
        net = load_rrdbnet(args.checkpoint)
    except RuntimeError as exc:  # load_state_dict(strict=True): missing/unexpected keys, wrong shapes
        raise ValueError(f"checkpoint {args.checkpoint} does not fit RRDBNet: {str(exc).splitlines()[0]}") from None
    enhancer = Enhancer(
        net,
        device=device,
        half=args.half,
        tile=args.tile_size or None,
        overlap=args.tile_overlap,
        batch_size=args.batch_size,
        outscale=args.outscale,
    )
    progress = not args.quiet
    if shards is not None:
        report = enhance_shards(shards, args.out, enhancer, args.jpeg_quality, progress)
        unit = "samples (skipped counts whole shards)"
    else:
        report = enhance_folder(args.input_dir, args.out, enhancer, args.jpeg_quality, args.workers, progress)
        unit = "files"
    print(f"{report.summary()} {unit} -> {args.out}")
    if report.failed:
        shown = ", ".join(name for name, _ in report.failed[:5])
        more = f" and {len(report.failed) - 5} more" if len(report.failed) > 5 else ""
        print(f"skipped unreadable: {shown}{more} (list in {Path(args.out) / FAILED_LIST})", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``enhance`` subcommand to the project's console script."""
    from text2earth.cli.parser import out_option

    p = subparsers.add_parser(
        "enhance",
        help="enhance images with an RRDBNet (x2): folder -> folder or shards -> shards",
        description="Upscale and clean images with an RRDBNet checkpoint (BasicSR .pth or our .safetensors). "
        "Walks --input-dir recursively and writes the same relative paths, names and formats under --out; "
        "files already there are skipped (resume).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input-dir", help="folder of PNG/JPEG/TIFF images (searched recursively)")
    src.add_argument("--input-shards", help="webdataset shards: a path, glob or brace pattern ('train-{0..9}.tar')")
    out_option(p, "where enhanced images (or shards) are written", "enhance")
    # The spelling of earlier releases, kept hidden for one release.
    p.add_argument("--output-dir", dest="out", help=argparse.SUPPRESS)
    p.add_argument(
        "--checkpoint", required=True, help="RRDBNet weights: BasicSR .pth (params_ema/params/bare) or .safetensors"
    )
    p.add_argument("--batch-size", type=int, default=16, help="images (or tiles) per forward pass")
    p.add_argument("--tile-size", type=int, default=256, help="tile side in input pixels; 0 = whole images")
    p.add_argument("--tile-overlap", type=int, default=16, help="context pixels around each tile")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when available)")
    p.add_argument("--half", action="store_true", help="float16 inference (CUDA only)")
    p.add_argument(
        "--outscale", type=float, default=None, help="final size factor (default: the model's scale; 1 = same size)"
    )
    p.add_argument("--jpeg-quality", type=int, default=95, help="quality of re-encoded JPEG outputs")
    p.add_argument("--workers", type=int, default=4, help="threads decoding and encoding files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
