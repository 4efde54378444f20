"""The ``text2earth data convert`` and ``text2earth data stats`` subcommands (registered by ``text2earth.cli.main``)."""

from __future__ import annotations

import argparse


def _convert(args: argparse.Namespace) -> int:
    from data_modules.convert import convert
    from data_modules.convert_sources import FolderSource, Git10mSource, RsicdSource

    name = {"name": args.source_name} if args.source_name else {}
    if args.kind == "git10m":
        source = Git10mSource(args.input, split=args.split, **name)
    elif args.kind == "folder":
        if not args.captions:
            raise ValueError("folder sources need --captions FILE.csv|.jsonl")
        source = FolderSource(args.input, args.captions, **name)
    else:
        if not args.images:
            raise ValueError("rsicd needs --images DIR (the folder of RSICD images)")
        source = RsicdSource(args.input, args.images, split=args.split, **name)
    manifest = convert(
        source,
        args.out,
        prefix=args.prefix,
        shard_count=args.shard_count,
        shard_bytes=int(args.shard_mb * 1e6),
        rows_per_task=args.rows_per_task,
        workers=args.workers,
    )
    skipped = ", ".join(f"{k} {v}" for k, v in manifest["skipped"].items()) or "none"
    print(
        f"wrote {manifest['samples']} samples in {len(manifest['shards'])} shards "
        f"({manifest['bytes'] / 1e6:.1f} MB) to {args.out}; skipped: {skipped} (see {args.out}/skipped.jsonl)"
    )
    return 0


def _stats(args: argparse.Namespace) -> int:
    from data_modules.stats import dataset_stats

    summary = dataset_stats(args.shards, args.out, cell_degrees=args.cell)
    print(f"{summary['samples']} samples ({summary['located']} with a location); wrote {', '.join(summary['files'])}")
    return 0


def register(data_sub: argparse._SubParsersAction) -> None:
    """Add ``convert`` and ``stats`` to the ``text2earth data`` subcommands."""
    conv = data_sub.add_parser(
        "convert",
        help="Git-10M / image folder / RSICD -> size-bounded webdataset shards (parallel, resumable)",
        description="Re-running with the same arguments resumes: finished tasks are kept, the rest redone.",
    )
    conv.add_argument("kind", choices=("git10m", "folder", "rsicd"))
    conv.add_argument(
        "input",
        help="git10m: Parquet/Arrow file, glob, folder or save_to_disk folder; folder: the image folder; "
        "rsicd: dataset_rsicd.json",
    )
    conv.add_argument("--out", required=True, help="output folder (shards, manifest.json, skipped.jsonl)")
    conv.add_argument("--captions", help="folder: CSV or JSONL with image, caption (+ gsd_m, level, lat, lon, ...)")
    conv.add_argument("--images", help="rsicd: the image folder")
    conv.add_argument("--split", help="only this split (save_to_disk DatasetDict, RSICD)")
    conv.add_argument("--prefix", default="train", help="shard names {prefix}-%%06d.tar")
    conv.add_argument("--shard-count", type=int, default=10_000, help="samples per shard at most")
    conv.add_argument("--shard-mb", type=float, default=1000.0, help="shard size bound in MB")
    conv.add_argument("--rows-per-task", type=int, default=None, help="rows per parallel task (default: shard count)")
    conv.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    conv.add_argument("--source-name", default=None, help="the 'source' written to each sample's json")
    conv.set_defaults(func=_convert)

    stats = data_sub.add_parser("stats", help="world density map + histograms (PNG) and a JSON summary of shards")
    stats.add_argument("shards", help="brace pattern, glob, folder, list file or manifest.json")
    stats.add_argument("--out", required=True)
    stats.add_argument("--cell", type=float, default=2.0, help="map cell size in degrees")
    stats.set_defaults(func=_stats)
