"""``make bench-data``: loader samples/s per worker on 256-px JPEG shards vs a plain PIL decode loop.

The shards are made from the embedded real tiles (built first when missing): each 64-px tile is resized
to 256 px (bicubic) and written as a JPEG (quality 90) with its caption and metadata. Both sides decode the
same JPEG bytes on one process: the plain loop does ``PIL.Image.open(...).convert("RGB")`` and
``np.asarray`` on bytes already in memory; the DataModule (``num_workers=0``, i.e. one process doing a
worker's whole job) reads the tar files, shuffles, decodes, flips and collates batches, with
``uint8_batches`` (normalised after the device transfer, here on the CPU) and with float batches built in
the worker. The ratio is DataModule / plain loop (target >= 0.7).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
from itertools import islice
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import webdataset as wds

from data_modules.embedded import ensure_embedded
from data_modules.webdataset_datamodule import ShardDataModule
from text2earth.core.paths import project_root
from text2earth.io.files import atomic_path
from text2earth.io.shards import iter_samples


def make_jpeg_shards(embedded: Path, out: Path, n: int, per_shard: int = 250, size: int = 256) -> list[Path]:
    """``n`` real tiles as ``size``-px JPEG samples in shards of ``per_shard`` (reused when present)."""
    expected = [out / f"bench-{i:06d}.tar" for i in range(-(-n // per_shard))]
    settings = {"n": n, "per_shard": per_shard, "size": size, "v": 2}
    done = (out / "bench.json").is_file() and json.loads((out / "bench.json").read_text()) == settings
    if done and all(p.is_file() for p in expected):
        return expected
    tiles = iter_samples(ensure_embedded(embedded, progress=False), split="train")
    samples = list(islice(tiles, n))
    if len(samples) < n:
        raise ValueError(f"only {len(samples)} tiles in {embedded}, asked for {n}")
    for shard, start in zip(expected, range(0, n, per_shard), strict=True):
        with atomic_path(shard) as tmp, wds.TarWriter(str(tmp), mtime=0) as sink:  # as convert writes
            for s in samples[start : start + per_shard]:
                image = PIL.Image.open(io.BytesIO(s["png"])).convert("RGB").resize((size, size), PIL.Image.BICUBIC)
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=90)
                sink.write({"__key__": s["__key__"], "jpg": buffer.getvalue(), "txt": s["txt"], "json": s["json"]})
    (out / "bench.json").write_text(json.dumps(settings))
    return expected


def plain_pil(shards: list[Path], repeats: int) -> float:
    """Samples/s of a plain decode loop over the JPEG bytes (read into memory beforehand); best epoch."""
    jpegs = [s["jpg"] for s in iter_samples(shards)]
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for data in jpegs:
            np.asarray(PIL.Image.open(io.BytesIO(data)).convert("RGB"))
        best = max(best, len(jpegs) / (time.perf_counter() - start))
    return best


def datamodule(shards: list[Path], repeats: int, num_workers: int, uint8: bool, batch_size: int = 64) -> float:
    """Samples/s of ShardDataModule training batches; best of ``repeats`` epochs after one warm-up batch.

    Best-of for both sides: on a shared machine the other processes' load only ever slows an epoch down.
    """
    dm = ShardDataModule(
        [str(p) for p in shards], batch_size=batch_size, num_workers=num_workers, image_size=256, uint8_batches=uint8
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    next(iter(loader))  # start workers, open files
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(len(batch["key"]) for batch in loader)  # uint8: normalised after the transfer, on the device
        best = max(best, n / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--embedded", default=str(project_root() / "data/embedded"), help="embedded shards (built when missing)"
    )
    parser.add_argument(
        "--out", default=str(project_root() / "outputs/bench_data"), help="where the JPEG shards are written"
    )
    parser.add_argument("--n", type=int, default=1000, help="samples")
    parser.add_argument("--repeats", type=int, default=3, help="epochs per measurement (the best one counts)")
    parser.add_argument("--workers", type=int, default=2, help="also measure the DataModule with this many workers")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shards = make_jpeg_shards(Path(args.embedded), out, args.n)
    pil = plain_pil(shards, args.repeats)
    u8 = datamodule(shards, args.repeats, num_workers=0, uint8=True)
    f32 = datamodule(shards, args.repeats, num_workers=0, uint8=False)
    result = {
        "device": f"cpu ({platform.processor() or platform.machine()})",
        "samples": args.n,
        "image": "256 px JPEG q90",
        "plain_pil_samples_s": pil,
        "datamodule_uint8_samples_s": u8,
        "datamodule_float_samples_s": f32,
        "ratio_uint8": u8 / pil,
        "ratio_float": f32 / pil,
    }
    print(f"plain PIL decode loop (one process):                    {pil:8.1f} samples/s")
    print(f"ShardDataModule, one process, uint8_batches=true:       {u8:8.1f} samples/s  ratio {u8 / pil:.2f}")
    print(f"ShardDataModule, one process, float batches (default):  {f32:8.1f} samples/s  ratio {f32 / pil:.2f}")
    print("target: ratio >= 0.70")
    if args.workers > 0:
        many = datamodule(shards, args.repeats, num_workers=args.workers, uint8=True)
        result[f"datamodule_uint8_{args.workers}_workers_samples_s"] = many
        print(
            f"ShardDataModule, uint8, num_workers={args.workers}: {many:8.1f} samples/s ({many / args.workers:.1f} per worker)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
