"""The ``text2earth data ...`` subcommands (registered by ``text2earth.cli.main``): the only way in to ``data_modules``."""

from __future__ import annotations

import argparse

from text2earth.cli.checks import positive
from text2earth.core.errors import UserError
from text2earth.io.outputs import check_writable_folder


def _convert(args: argparse.Namespace) -> int:
    from data_modules.convert import convert
    from data_modules.convert_sources import FolderSource, Git10mSource, RsicdSource

    check_writable_folder(args.out)
    positive(
        shard_count=args.shard_count, workers=args.workers, shard_mb=args.shard_mb, rows_per_task=args.rows_per_task
    )
    name = {"name": args.source_name} if args.source_name else {}
    if args.kind == "git10m":
        source = Git10mSource(args.input, split=args.split, **name)
    elif args.kind == "folder":
        if not args.captions:
            raise ValueError("folder sources need --captions FILE.csv|.jsonl")
        source = FolderSource(args.input, args.captions, allow_outside=args.allow_outside_images, **name)
    else:
        if not args.images:
            raise ValueError("rsicd needs --images DIR (the folder of RSICD images)")
        source = RsicdSource(args.input, args.images, split=args.split, **name)
    manifest = convert(
        source,
        args.out,
        prefix=args.prefix or args.split or "train",
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

    check_writable_folder(args.out)
    if not args.cell > 0:
        raise UserError(f"--cell must be a positive number of degrees, got {args.cell}")
    summary = dataset_stats(args.shards, args.out, cell_degrees=args.cell)
    damaged = ""
    if summary["damaged_shards"]:
        damaged = (
            f"; {summary['damaged_shards']} damaged shards read up to the damage, "
            f"{_lost(summary['lost_samples'], summary['lost_exact'])}"
        )
    print(
        f"{summary['samples']} samples ({summary['located']} with a location, {summary['skipped']} unreadable skipped"
        f"{damaged}); wrote {', '.join(summary['files'])}"
    )
    return 0


def _lost(samples: int, exact: bool) -> str:
    """``12 samples lost``, or ``at least 1 sample lost`` where a damaged shard's count was not recorded."""
    return f"{'' if exact else 'at least '}{samples} sample{'' if samples == 1 else 's'} lost"


def _build_embedded(args: argparse.Namespace) -> int:
    from data_modules.embedded.build import build_embedded_shards
    from data_modules.embedded.preview import write_preview

    _default_data(args, out="embedded")
    check_writable_folder(args.out)
    positive(
        tile_size=args.tile_size,
        every=args.every,
        max_per_shard=args.max_per_shard,
        tiles_per_level=args.tiles_per_level,
    )
    if not 0 < args.val_fraction < 1:
        raise UserError(f"--val-fraction must lie between 0 and 1, got {args.val_fraction}")
    # The builder's own default when not given: one home for it.
    per_level = {"tiles_per_level": args.tiles_per_level} if args.tiles_per_level is not None else {}
    manifest = build_embedded_shards(
        args.out,
        tile_size=args.tile_size,
        val_fraction=args.val_fraction,
        max_per_shard=args.max_per_shard,
        seed=args.seed,
        progress=not args.quiet,
        every=args.every,
        **per_level,
    )
    split = manifest["counts"]["split"]
    print(
        f"wrote {split.get('train', 0)} train and {split.get('val', 0)} val tiles to {args.out} "
        f"in {manifest['build_seconds']} s"
    )
    for lv in manifest["levels"]:
        print(
            f"  {lv['source']:9s} {lv['gsd_m']:5g} m  L{lv['level']:<7g} stride {lv['stride']:2d}  "
            f"train {lv['train']:4d}  val {lv['val']:4d}  ({lv['resampling']})"
        )
    if args.preview:
        print(f"preview: {write_preview(args.out, args.preview)}")
    return 0


def _cache_latents(args: argparse.Namespace) -> int:
    from data_modules.latent_cache import cache_latents
    from text2earth.io.device import pick_device

    check_writable_folder(args.out)
    positive(batch_size=args.batch_size, image_size=args.image_size)
    pick_device(args.device)
    counts = cache_latents(
        args.shards,
        args.model,
        args.out,
        image_size=args.image_size,
        batch_size=args.batch_size,
        flip=args.flip,
        device=args.device,
        devices=args.devices,
        text=not args.no_text,
    )
    lost = f" ({_lost(counts['lost_samples'], counts['lost_exact'])})" if counts["damaged_shards"] else ""
    print(
        f"cached {counts['samples']} samples in {counts['shards']} shards to {args.out} "
        f"(skipped {counts['skipped']}, damaged shards {counts['damaged_shards']}{lost}; "
        f"{counts['kept']} shards already done)"
    )
    return 0


def _build_pairs(args: argparse.Namespace) -> int:
    from data_modules.pairs import build_pair_shards, check_set

    _default_data(args, embedded="embedded", out="pairs")
    check_writable_folder(args.out)
    names = [check_set(s) for s in args.sets] if args.sets else None
    reports = build_pair_shards(args.embedded, args.out, names, max_per_split=args.max_per_split)
    for name, report in reports.items():
        print(f"{name:>14}: {report['counts']['train']:5d} train {report['counts']['val']:5d} val")
    return 0


def _default_data(args: argparse.Namespace, **names: str) -> None:
    """Fill unset folder options with PROJECT/data/NAME: the folders the training configs read
    (``paths.data_dir``), whatever the working directory."""
    from text2earth.core.paths import project_root

    for attr, name in names.items():
        if getattr(args, attr) is None:
            setattr(args, attr, str(project_root() / "data" / name))


def register(data_sub: argparse._SubParsersAction) -> None:
    from text2earth.cli.parser import out_option

    """Add every ``text2earth data`` subcommand."""
    emb = data_sub.add_parser("build-embedded", help="cut the real Landsat-8 / Sentinel-2 scenes into shards")
    emb.add_argument(
        "--out", default=None, help="output folder for the shards and manifest.json (default: PROJECT/data/embedded)"
    )
    emb.add_argument("--preview", default=None, metavar="PNG", help="also write a PNG grid of tiles per level here")
    emb.add_argument("--tile-size", type=int, default=64, help="tile side in pixels")
    emb.add_argument("--val-fraction", type=float, default=0.15, help="minimum width of each scene's held-out band")
    emb.add_argument("--max-per-shard", type=int, default=1000, help="samples per shard at most")
    emb.add_argument("--tiles-per-level", type=int, default=None, help="train tiles aimed at per level (default 350)")
    emb.add_argument("--every", type=int, default=1, help="keep every N-th tile of each level (a quick subset)")
    emb.add_argument("--seed", type=int, default=0, help="seed of the shard order and caption wording")
    emb.add_argument("--quiet", action="store_true", help="no progress bar")
    emb.set_defaults(func=_build_embedded)

    cache = data_sub.add_parser(
        "cache-latents",
        help="encode shards once with the VAE and text encoder (training skips both); re-running resumes",
    )
    cache.add_argument("shards", help="brace pattern, glob, folder or list file")
    cache.add_argument("--model", required=True, help="a model folder (its vae/) or a VAE folder")
    out_option(cache, "output folder of the cached shards", "latents")
    cache.add_argument("--image-size", type=int, default=None, help="default: each image's own size (no resampling)")
    cache.add_argument("--batch-size", type=int, default=64, help="images per VAE forward pass")
    cache.add_argument("--flip", action="store_true", help="also cache the latents of the flipped image")
    cache.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    cache.add_argument(
        "--devices",
        default=None,
        help="one process per device: a count of --device (cuda -> cuda:0..N-1) or a list (cuda:0,cuda:2)",
    )
    cache.add_argument("--no-text", action="store_true", help="do not cache the text encoder's states")
    cache.set_defaults(func=_cache_latents)

    conv = data_sub.add_parser(
        "convert",
        help="Git-10M / image folder / RSICD -> size-bounded webdataset shards (parallel, resumable)",
        description="Re-running with the same arguments resumes: finished tasks are kept, the rest redone.",
    )
    conv.add_argument("kind", choices=("git10m", "folder", "rsicd"), help="the source format")
    conv.add_argument(
        "input",
        help="git10m: Parquet/Arrow file, glob, folder or save_to_disk folder; folder: the image folder; "
        "rsicd: dataset_rsicd.json",
    )
    conv.add_argument("--out", required=True, help="output folder (shards, manifest.json, skipped.jsonl)")
    conv.add_argument("--captions", help="folder: CSV or JSONL with image, caption (+ gsd_m, level, lat, lon, ...)")
    conv.add_argument("--images", help="rsicd: the image folder")
    conv.add_argument(
        "--allow-outside-images",
        action="store_true",
        help="folder: let the captions file name images outside the image folder (.., absolute paths)",
    )
    conv.add_argument("--split", help="only this split (save_to_disk DatasetDict, RSICD)")
    conv.add_argument("--prefix", default=None, help="shard names {prefix}-%%06d.tar (default: --split, else train)")
    conv.add_argument("--shard-count", type=int, default=10_000, help="samples per shard at most")
    conv.add_argument("--shard-mb", type=float, default=1000.0, help="shard size bound in MB")
    conv.add_argument("--rows-per-task", type=int, default=None, help="rows per parallel task (default: shard count)")
    conv.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    conv.add_argument("--source-name", default=None, help="the 'source' written to each sample's json")
    conv.set_defaults(func=_convert)

    stats = data_sub.add_parser("stats", help="world density map + histograms (PNG) and a JSON summary of shards")
    stats.add_argument("shards", help="brace pattern, glob, folder, list file or manifest.json")
    out_option(stats, "output folder (PNGs and stats.json)", "stats")
    stats.add_argument("--cell", type=float, default=2.0, help="map cell size in degrees")
    stats.set_defaults(func=_stats)

    pairs = data_sub.add_parser("build-pairs", help="paired shards for translation + single-modality shards (LoRA)")
    pairs.add_argument("--embedded", default=None, help="the embedded shards (default: PROJECT/data/embedded)")
    pairs.add_argument("--out", default=None, help="output folder (default: PROJECT/data/pairs)")
    pairs.add_argument("--sets", nargs="*", default=None, help="tasks and/or modality_{nir,pan,sar} (default: all)")
    pairs.add_argument("--max-per-split", type=int, default=None, help="keep only the first N pairs of each split")
    pairs.set_defaults(func=_build_pairs)
