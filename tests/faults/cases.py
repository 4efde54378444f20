"""The bad-input sweep as a table: argv (``{name}`` = a workspace input, ``{out}`` / ``{out_png}`` = this case's
own output paths) and the expected outcome: a one-line exit 2 whose message contains ``match``, or success
checked by ``check``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image

COMMANDS = ("generate", "translate", "train", "evaluate", "export", "info", "data", "edit", "outpaint", "enhance")


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    match: str | None = None  # expected error text (an error case); None: a success case
    check: Callable[[dict[str, str], Path], None] | None = None  # (workspace, case folder) for success cases

    @property
    def command(self) -> str:
        if not self.argv or self.argv[0] not in COMMANDS:
            return "(no or unknown command)"
        return self.argv[0] if self.argv[0] != "data" or len(self.argv) < 2 else f"data {self.argv[1]}"


def err(name: str, argv: str | list[str], match: str) -> Case:
    return Case(name, tuple(argv.split() if isinstance(argv, str) else argv), match=match)


def ok(name: str, argv: str | list[str], check: Callable[[dict[str, str], Path], None]) -> Case:
    return Case(name, tuple(argv.split() if isinstance(argv, str) else argv), check=check)


# -- success checks ---------------------------------------------------------------------------------
def _files(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.rglob(pattern) if p.is_file())


def no_tmp(case_dir: Path) -> None:
    torn = [p for p in case_dir.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name.split(".")[-2:]]
    assert not torn, f"torn temporary files left: {torn}"


def generated(n: int) -> Callable[[dict[str, str], Path], None]:
    def check(ws: dict[str, str], case: Path) -> None:
        pngs = _files(case / "out", "0*.png")
        assert len(pngs) == n and (case / "out" / "grid.png").is_file(), pngs
        assert PIL.Image.open(pngs[0]).size == (32, 32)

    return check


def png_of(size: tuple[int, int], mode: str = "RGB", name: str = "out.png") -> Callable[[dict[str, str], Path], None]:
    def check(ws: dict[str, str], case: Path) -> None:
        with PIL.Image.open(case / name) as image:
            assert image.format == "PNG" and image.size == size and image.mode == mode, (image.format, image.size)
            assert np.asarray(image).std() > 0, "a flat image"

    return check


def canvas(size: tuple[int, int]) -> Callable[[dict[str, str], Path], None]:
    def check(ws: dict[str, str], case: Path) -> None:
        png_of(size)(ws, case)
        assert json.loads((case / "out.json").read_text())["width"] == size[0]

    return check


def printed(ws: dict[str, str], case: Path) -> None:
    """A command that only prints (checked by its exit code 0 and its stdout in the runner)."""


def stats_counted(samples: int, damaged_shards: int = 0) -> Callable[[dict[str, str], Path], None]:
    def check(ws: dict[str, str], case: Path) -> None:
        summary = json.loads((case / "out" / "stats.json").read_text())
        assert (summary["samples"], summary["damaged_shards"], summary["skipped"]) == (samples, damaged_shards, 0)

    return check


def converted(samples: int) -> Callable[[dict[str, str], Path], None]:
    def check(ws: dict[str, str], case: Path) -> None:
        manifest = json.loads((case / "out" / "manifest.json").read_text())
        assert manifest["samples"] == samples, manifest

    return check


def cached(samples: int, skipped: int) -> Callable[[dict[str, str], Path], None]:
    def check(ws: dict[str, str], case: Path) -> None:
        tars = _files(case / "out", "*.tar")
        assert tars, "no latent shards written"
        report = json.loads((case / "out" / "latent_cache.json").read_text())
        assert (report["samples"], report["skipped"]) == (samples, skipped), report

    return check


def cached_damaged(ws: dict[str, str], case: Path) -> None:
    """The whole shards cached, the truncated one up to its damage, and the damage counted."""
    report = json.loads((case / "out" / "latent_cache.json").read_text())
    assert report["damaged_shards"] == 1 and 12 <= report["samples"] < 20, report


def enhanced(ws: dict[str, str], case: Path) -> None:
    out = _files(case / "out", "*.png")
    assert len(out) == 2 and all(PIL.Image.open(p).size == (64, 64) for p in out), out


def band_file(name: str, bits: int) -> Callable[[dict[str, str], Path], None]:
    def check(ws: dict[str, str], case: Path) -> None:
        array = np.asarray(PIL.Image.open(case / name))
        assert array.shape == (32, 32) and array.dtype == (np.uint16 if bits == 16 else np.uint8), array.dtype
        assert array.std() > 0

    return check


# -- the table --------------------------------------------------------------------------------------
T2I = "--model {model} --gsd 10 --steps 1 --height 32 --width 32"
GEN = f"generate fields {T2I} --n 1"
GEN_NO_MODEL = "generate fields --gsd 10 --steps 1 --height 32 --width 32 --n 1"
EDIT = "edit {rgb} {mask} houses --model {inpaint} --gsd 10 --steps 1"
OUTPAINT = "outpaint fields --model {inpaint} --gsd 10 --steps 1 --width 64 --height 32 --window 32 --overlap 8"
TRANSLATE = "translate {gray} --task pan2rgb --steps 1"
EXPORT = "export"
TRAIN = "train hydra.run.dir={out} paths.data_dir={root}/nodata"
SHARDS = "{shards}/train-{{000000..000001}}.tar"
ENHANCE = "enhance --checkpoint {rrdb} --tile-size 0 --batch-size 1 --quiet"
ENH_IN = "--input-dir {folder_src}"

MODEL_DAMAGE = (
    "model_truncated",
    "model_garbage",
    "model_empty",
    "model_badconfig",
    "model_badvalue",
    "model_noweights",
    "model_badindex",
)

CASES: list[Case] = [
    # generate
    ok("generate/ok", f"{GEN} --out {{out}}", generated(1)),
    ok("generate/two-prompts", f"generate fields river {T2I} --n 2 --out {{out}}", generated(4)),
    ok("generate/out-existing-folder", f"{GEN} --out {{existing_dir}}", lambda ws, case: None),
    err("generate/hub-id", f"{GEN_NO_MODEL} --model lcybuaa/Text2Earth --out {{out}}", "looks like a hub id"),
    err("generate/model-missing", f"{GEN_NO_MODEL} --model {{root}}/nope --out {{out}}", "does not exist"),
    err("generate/model-is-file", f"{GEN_NO_MODEL} --model {{text_file}} --out {{out}}", "is a file"),
    *[err(f"generate/{d}", f"{GEN_NO_MODEL} --model {{{d}}} --out {{out}}", "cannot be read") for d in MODEL_DAMAGE],
    err("generate/level-30", f"{GEN} --level 30 --out {{out}}".replace("--gsd 10 ", ""), "level must lie in"),
    err("generate/gsd-negative", f"{GEN} --out {{out}}".replace("--gsd 10", "--gsd -2"), "gsd_m must be a positive"),
    err("generate/gsd-zero", f"{GEN} --out {{out}}".replace("--gsd 10", "--gsd 0"), "gsd_m must be a positive"),
    err(
        "generate/n-zero",
        f"{T2I} --n 0 --out {{out}}".replace("--model", "generate fields --model", 1),
        "--n must be at least 1",
    ),
    err("generate/steps-zero", f"{GEN} --out {{out}}".replace("--steps 1", "--steps 0"), "--steps"),
    err("generate/height-odd", f"{GEN} --out {{out}}".replace("--height 32", "--height 33"), "multiple of"),
    err("generate/width-zero", f"{GEN} --out {{out}}".replace("--width 32", "--width 0"), "width"),
    err("generate/out-is-file", f"{GEN} --out {{text_file}}", "is a file"),
    err("generate/out-under-file", f"{GEN} --out {{text_file}}/sub", "is a file"),
    err("generate/out-read-only", f"{GEN} --out {{read_only}}", "cannot write"),
    err("generate/device-cuda", f"{GEN} --device cuda --out {{out}}", "no CUDA device"),
    err("generate/device-unknown", f"{GEN} --device tpu9 --out {{out}}", "unknown device"),
    err("generate/scheduler", f"{GEN} --scheduler nope --out {{out}}", "scheduler"),
    err("generate/modality", f"{GEN} --modality xray --out {{out}}", "modality"),
    err("generate/modality-without-lora", f"{GEN} --modality nir --out {{out}}", "LoRA"),
    err("generate/lora-missing", f"{GEN} --lora {{root}}/nolora --out {{out}}", "LoRA"),
    err("generate/no-model-flag", f"{GEN_NO_MODEL} --out {{out}}", "--model"),
    err("generate/n-not-int", f"{GEN} --n many --out {{out}}", "--n"),
    err("generate/no-prompt", "generate --model {model} --gsd 10 --out {out}", "give one or more prompts"),
    # edit
    ok("edit/ok", f"{EDIT} --out {{out_png}}", png_of((32, 32))),
    ok("edit/paste-back", f"{EDIT} --paste-back --out {{out_png}}", png_of((32, 32))),
    ok(
        "edit/jpeg-input",
        "edit {rgb_jpg} {mask} houses --model {inpaint} --gsd 10 --steps 1 --out {out_png}",
        png_of((32, 32)),
    ),
    err(
        "edit/image-missing",
        "edit {root}/nope.png {mask} x --model {inpaint} --out {out_png}",
        "does not exist",
    ),
    err("edit/mask-missing", "edit {rgb} {root}/nope.png x --model {inpaint} --out {out_png}", "does not exist"),
    err("edit/image-garbage", "edit {garbage_png} {mask} x --model {inpaint} --out {out_png}", "cannot decode"),
    err("edit/image-empty", "edit {empty_png} {mask} x --model {inpaint} --out {out_png}", "cannot decode"),
    err(
        "edit/image-truncated",
        "edit {truncated_png} {mask} x --model {inpaint} --out {out_png}",
        "cannot decode",
    ),
    err("edit/mask-size", "edit {rgb} {mask_small} x --model {inpaint} --out {out_png}", "size"),
    err("edit/image-16bit", "edit {gray16} {mask} x --model {inpaint} --out {out_png}", "16-bit"),
    err("edit/image-16bit-tif", "edit {gray16_tif} {mask} x --model {inpaint} --out {out_png}", "16-bit"),
    err("edit/text2img-model", f"{EDIT} --out {{out_png}}".replace("{inpaint}", "{model}"), "inpainting"),
    err("edit/model-missing", f"{EDIT} --out {{out_png}}".replace("{inpaint}", "{root}/nope"), "does not exist"),
    err(
        "edit/model-truncated", f"{EDIT} --out {{out_png}}".replace("{inpaint}", "{model_truncated}"), "cannot be read"
    ),
    err("edit/out-existing-folder", f"{EDIT} --out {{existing_dir}}", "is a folder"),
    err("edit/out-read-only", f"{EDIT} --out {{read_only}}/x.png", "cannot write"),
    err("edit/out-jpg", f"{EDIT} --out {{out}}.jpg", ".png"),
    err("edit/out-no-suffix", f"{EDIT} --out {{out}}", ".png"),
    err("edit/level-99", f"{EDIT} --out {{out_png}}".replace("--gsd 10", "--level 99"), "level must lie in"),
    err("edit/device-cuda", f"{EDIT} --device cuda --out {{out_png}}", "no CUDA device"),
    err("edit/steps-zero", f"{EDIT} --out {{out_png}}".replace("--steps 1", "--steps 0"), "--steps"),
    # outpaint
    ok("outpaint/tiles", f"{OUTPAINT} --out {{out_png}}", canvas((64, 32))),
    ok("outpaint/init", f"{OUTPAINT} --init {{rgb}} --out {{out_png}}", canvas((64, 32))),
    ok(
        "outpaint/joint", f"{OUTPAINT} --mode joint --out {{out_png}}".replace("{inpaint}", "{model}"), canvas((64, 32))
    ),
    err(
        "outpaint/tile-zero",
        f"{OUTPAINT} --out {{out_png}}".replace("--window 32", "--window 0"),
        "--window must be at least 1",
    ),
    err("outpaint/overlap-too-big", f"{OUTPAINT} --out {{out_png}}".replace("--overlap 8", "--overlap 32"), "overlap"),
    err("outpaint/overlap-negative", f"{OUTPAINT} --out {{out_png}}".replace("--overlap 8", "--overlap -4"), "overlap"),
    err("outpaint/width-zero", f"{OUTPAINT} --out {{out_png}}".replace("--width 64", "--width 0"), "width"),
    err("outpaint/height-negative", f"{OUTPAINT} --out {{out_png}}".replace("--height 32", "--height -5"), "height"),
    err("outpaint/init-missing", f"{OUTPAINT} --init {{root}}/nope.png --out {{out_png}}", "does not exist"),
    err("outpaint/init-garbage", f"{OUTPAINT} --init {{garbage_png}} --out {{out_png}}", "cannot decode"),
    err("outpaint/init-16bit", f"{OUTPAINT} --init {{gray16}} --out {{out_png}}", "16-bit"),
    err("outpaint/init-joint", f"{OUTPAINT} --mode joint --init {{rgb}} --out {{out_png}}", "--mode tiles"),
    err("outpaint/tiles-text2img", f"{OUTPAINT} --out {{out_png}}".replace("{inpaint}", "{model}"), "inpainting"),
    err("outpaint/joint-inpaint", f"{OUTPAINT} --mode joint --out {{out_png}}", "text-to-image"),
    err("outpaint/out-existing-folder", f"{OUTPAINT} --out {{existing_dir}}", "is a folder"),
    err("outpaint/out-read-only", f"{OUTPAINT} --out {{read_only}}/c.png", "cannot write"),
    err("outpaint/out-jpg", f"{OUTPAINT} --out {{out}}.jpg", ".png"),
    err(
        "outpaint/model-badconfig",
        f"{OUTPAINT} --out {{out_png}}".replace("{inpaint}", "{model_badconfig}"),
        "cannot be read",
    ),
    err("outpaint/device-cuda", f"{OUTPAINT} --device cuda --out {{out_png}}", "no CUDA device"),
    # translate
    ok("translate/pan2rgb", f"{TRANSLATE} --out {{out_png}}", png_of((32, 32))),
    ok("translate/pan2rgb-16bit", f"{TRANSLATE} --out {{out_png}}".replace("{gray}", "{gray16}"), png_of((32, 32))),
    ok(
        "translate/pan2rgb-16bit-tif",
        f"{TRANSLATE} --out {{out_png}}".replace("{gray}", "{gray16_tif}"),
        png_of((32, 32)),
    ),
    ok(
        "translate/pan2nir-tif",
        "translate {gray} --task pan2nir --steps 1 --bits 16 --out {out}.tif",
        band_file("out.tif", 16),
    ),
    err("translate/task", f"{TRANSLATE} --out {{out_png}}".replace("pan2rgb", "pan2xyz"), "task"),
    err(
        "translate/input-missing",
        f"{TRANSLATE} --out {{out_png}}".replace("{gray}", "{root}/nope.png"),
        "does not exist",
    ),
    err(
        "translate/input-garbage", f"{TRANSLATE} --out {{out_png}}".replace("{gray}", "{garbage_png}"), "cannot decode"
    ),
    err("translate/input-rgb-for-pan", f"{TRANSLATE} --out {{out_png}}".replace("{gray}", "{rgb}"), "single-band"),
    err("translate/input-odd-size", f"{TRANSLATE} --out {{out_png}}".replace("{gray}", "{gray_odd}"), "multiple of"),
    err(
        "translate/translator-missing",
        f"{TRANSLATE} --translator {{root}}/nope --out {{out_png}}",
        "not a translator folder",
    ),
    err(
        "translate/translator-other-task",
        f"{TRANSLATE} --translator {{translator}}/../nir2rgb --out {{out_png}}",
        "trained for",
    ),
    err("translate/model-missing", f"{TRANSLATE} --model {{root}}/nope --out {{out_png}}", "does not exist"),
    err("translate/model-truncated", f"{TRANSLATE} --model {{model_truncated}} --out {{out_png}}", "cannot be read"),
    err(
        "translate/dn-range-empty",
        f"{TRANSLATE} --dn-range 5 5 --out {{out_png}}".replace("{gray}", "{gray16}"),
        "range",
    ),
    err("translate/out-existing-folder", f"{TRANSLATE} --out {{existing_dir}}", "is a folder"),
    err("translate/out-read-only", f"{TRANSLATE} --out {{read_only}}/t.png", "cannot write"),
    err("translate/out-jpg", f"{TRANSLATE} --out {{out}}.jpg", ".png"),
    err("translate/band-out-jpg", "translate {gray} --task pan2nir --steps 1 --out {out}.jpg", ".png"),
    err("translate/bits", f"{TRANSLATE} --bits 12 --out {{out_png}}", "--bits"),
    err("translate/device-cuda", f"{TRANSLATE} --device cuda --out {{out_png}}", "no CUDA device"),
    err("translate/steps-zero", f"{TRANSLATE} --out {{out_png}}".replace("--steps 1", "--steps 0"), "--steps"),
    # export
    err("export/missing", "export {root}/nope.ckpt --out {out}", "does not exist"),
    err("export/truncated", "export {ckpt_truncated} --out {out}", "truncated"),
    err("export/foreign", "export {ckpt_foreign} --out {out}", "text2earth train"),
    err("export/text", "export {ckpt_text} --out {out}", "not a checkpoint"),
    err("export/directory", "export {ckpts} --out {out}", "is a folder"),
    err("export/foreign-no-ema", "export {ckpt_foreign} --no-ema --out {out}", "text2earth train"),
    err("export/out-is-file", "export {ckpt_foreign} --out {text_file}", "is a file"),
    err("export/out-read-only", "export {ckpt_foreign} --out {read_only}", "cannot write"),
    # info
    ok("info/default", "info", printed),
    ok("info/tiny", "info --preset tiny", printed),
    err("info/unknown-preset", "info --preset nope", "preset"),
    # train
    err("train/experiment-typo", f"{TRAIN} experiment=demo_autoencoderr", "did you mean experiment=demo_autoencoder"),
    err("train/experiment-unknown", f"{TRAIN} experiment=nope", "no experiment config named 'nope'"),
    err("train/key-typo", f"{TRAIN} trainer.max_step=5", "did you mean trainer.max_steps"),
    err("train/group-typo", f"{TRAIN} trainer=cpux", "did you mean trainer=cpu"),
    err("train/bad-value", f"{TRAIN} trainer.max_steps=many", "wrong type"),
    err("train/bad-syntax", f"{TRAIN} trainer.max_steps=[1", "[1"),
    err("train/vae-missing", f"{TRAIN} experiment=demo model.components.vae_folder={{root}}/nope", "no autoencoder"),
    err("train/ckpt-missing", f"{TRAIN} ckpt_path={{root}}/nope.ckpt", "does not exist"),
    err("train/ckpt-truncated", f"{TRAIN} ckpt_path={{ckpt_truncated}}", "truncated"),
    err("train/ckpt-text", f"{TRAIN} ckpt_path={{ckpt_text}}", "not a checkpoint"),
    err("train/ckpt-last-none", f"{TRAIN} ckpt_path=last", "nothing to resume"),
    err("train/resume-missing", "train resume={root}/norun", "does not exist"),
    err("train/resume-not-a-run", "train resume={empty_run}", "not a training run folder"),
    err(
        "train/shards-nothing",
        f"{TRAIN} data.train_shards={{root}}/none/*.tar data.val_shards={{root}}/none/*.tar",
        "no shards match",
    ),
    err("train/run-dir-is-file", "train hydra.run.dir={text_file}", "is a file"),
    err("train/run-dir-read-only", "train hydra.run.dir={read_only}", "cannot write"),
    err("train/deepspeed", f"{TRAIN} trainer=deepspeed", "deepspeed"),
    # evaluate
    err("evaluate/data-typo", "evaluate eval_data=rsicdd hydra.run.dir={out}", "did you mean eval_data=rsicd"),
    err("evaluate/key-typo", "evaluate generation.step=3 hydra.run.dir={out}", "did you mean generation.steps"),
    err("evaluate/model-missing", "evaluate model_dir={root}/nope hydra.run.dir={out} metrics=[fid]", "does not exist"),
    err(
        "evaluate/model-truncated",
        "evaluate model_dir={model_truncated} hydra.run.dir={out} metrics=[resolution] "
        "eval_data.real_shards={shards}/train-*.tar",
        "cannot be read",
    ),
    err("evaluate/metric-unknown", "evaluate metrics=[fidd] hydra.run.dir={out}", "fidd"),
    err("evaluate/out-read-only", "evaluate hydra.run.dir={read_only}", "cannot write"),
    err("evaluate/device-cuda", "evaluate device=cuda hydra.run.dir={out} metrics=[resolution]", "no CUDA device"),
    # data convert
    ok("convert/folder", "data convert folder {folder_src} --captions {captions} --out {out}", converted(2)),
    err("convert/folder-no-captions", "data convert folder {folder_src} --out {out}", "--captions"),
    err(
        "convert/folder-missing", "data convert folder {root}/nope --captions {captions} --out {out}", "does not exist"
    ),
    err("convert/folder-is-file", "data convert folder {text_file} --captions {captions} --out {out}", "is a file"),
    err(
        "convert/captions-missing",
        "data convert folder {folder_src} --captions {root}/nope.csv --out {out}",
        "does not exist",
    ),
    err(
        "convert/captions-binary",
        "data convert folder {folder_src} --captions {captions_binary} --out {out}",
        "cannot read",
    ),
    err(
        "convert/captions-no-image-column",
        "data convert folder {folder_src} --captions {captions_nocol} --out {out}",
        "image column",
    ),
    err(
        "convert/captions-bad-jsonl",
        "data convert folder {folder_src} --captions {captions_jsonl_bad} --out {out}",
        ":2: not JSON",
    ),
    err(
        "convert/captions-escape",
        "data convert folder {folder_src} --captions {captions_escape} --out {out}",
        "outside",
    ),
    err("convert/rsicd-no-images", "data convert rsicd {rsicd_bad} --out {out}", "--images"),
    err("convert/rsicd-bad-json", "data convert rsicd {rsicd_bad} --images {folder_src} --out {out}", "rsicd"),
    err("convert/git10m-missing", "data convert git10m {root}/nope.parquet --out {out}", "no Parquet"),
    err("convert/git10m-not-parquet", "data convert git10m {text_file} --out {out}", "cannot read"),
    err(
        "convert/shard-count-zero",
        "data convert folder {folder_src} --captions {captions} --shard-count 0 --out {out}",
        "--shard-count",
    ),
    err(
        "convert/workers-zero",
        "data convert folder {folder_src} --captions {captions} --workers 0 --out {out}",
        "--workers",
    ),
    err("convert/out-is-file", "data convert folder {folder_src} --captions {captions} --out {text_file}", "is a file"),
    err(
        "convert/out-read-only",
        "data convert folder {folder_src} --captions {captions} --out {read_only}",
        "cannot write",
    ),
    # data stats
    ok("stats/ok", f"data stats {SHARDS} --out {{out}}", stats_counted(12)),
    ok("stats/folder", "data stats {shards} --out {out}", stats_counted(12)),
    ok("stats/truncated-tar", "data stats {truncated_tar} --out {out}", stats_counted(4, damaged_shards=1)),
    err("stats/pipe-manifest", "data stats {evil_manifest} --out {out}", "shell command"),
    err("stats/pipe-list", "data stats {evil_list} --out {out}", "shell command"),
    err("stats/pipe-nested-list", "data stats {evil_list_list} --out {out}", "shell command"),
    err("stats/bad-manifest", "data stats {bad_manifest} --out {out}", "manifest"),
    err("stats/nothing", "data stats {root}/none/*.tar --out {out}", "no shards match"),
    err("stats/cell-zero", f"data stats {SHARDS} --cell 0 --out {{out}}", "--cell"),
    err("stats/out-is-file", f"data stats {SHARDS} --out {{text_file}}", "is a file"),
    err("stats/out-read-only", f"data stats {SHARDS} --out {{read_only}}", "cannot write"),
    # data cache-latents
    ok("cache/ok", f"data cache-latents {SHARDS} --model {{model}} --batch-size 4 --out {{out}}", cached(12, 0)),
    ok(
        "cache/truncated-tar",
        "data cache-latents {mixed_list} --model {model} --batch-size 4 --out {out}",
        cached_damaged,
    ),
    err("cache/model-missing", f"data cache-latents {SHARDS} --model {{root}}/nope --out {{out}}", "does not exist"),
    err(
        "cache/vae-truncated",
        f"data cache-latents {SHARDS} --model {{model_badvae}} --out {{out}}",
        "cannot be read",
    ),
    err("cache/nothing", "data cache-latents {root}/none/*.tar --model {model} --out {out}", "no shards match"),
    err("cache/pipe", "data cache-latents {evil_manifest} --model {model} --out {out}", "shell command"),
    err(
        "cache/batch-zero",
        f"data cache-latents {SHARDS} --model {{model}} --batch-size 0 --out {{out}}",
        "--batch-size",
    ),
    err(
        "cache/device-cuda",
        f"data cache-latents {SHARDS} --model {{model}} --device cuda --out {{out}}",
        "no CUDA device",
    ),
    err("cache/out-is-file", f"data cache-latents {SHARDS} --model {{model}} --out {{text_file}}", "is a file"),
    err("cache/out-read-only", f"data cache-latents {SHARDS} --model {{model}} --out {{read_only}}", "cannot write"),
    # data build-embedded / build-pairs
    err("embedded/tile-zero", "data build-embedded --tile-size 0 --out {out}", "--tile-size"),
    err("embedded/every-zero", "data build-embedded --every 0 --out {out}", "--every"),
    err("embedded/val-fraction", "data build-embedded --val-fraction 2 --out {out}", "--val-fraction"),
    err("embedded/out-is-file", "data build-embedded --out {text_file}", "is a file"),
    err("embedded/out-read-only", "data build-embedded --out {read_only}", "cannot write"),
    err("pairs/embedded-missing", "data build-pairs --embedded {root}/nope --out {out}", "no shards match"),
    err("pairs/set-unknown", "data build-pairs --embedded {shards} --sets nope --out {out}", "nope"),
    err("pairs/out-is-file", "data build-pairs --embedded {shards} --out {text_file}", "is a file"),
    err("pairs/out-read-only", "data build-pairs --embedded {shards} --out {read_only}", "cannot write"),
    # enhance
    ok("enhance/folder", f"{ENHANCE} {ENH_IN} --out {{out}}", enhanced),
    err("enhance/input-missing", f"{ENHANCE} --input-dir {{root}}/nope --out {{out}}", "does not exist"),
    err("enhance/input-is-file", f"{ENHANCE} --input-dir {{text_file}} --out {{out}}", "is a file"),
    err(
        "enhance/shards-nothing",
        f"{ENHANCE} --input-shards {{root}}/none/*.tar --out {{out}}",
        "no shards match",
    ),
    err("enhance/shards-pipe", f"{ENHANCE} --input-shards {{evil_manifest}} --out {{out}}", "shell command"),
    err(
        "enhance/checkpoint-missing",
        f"{ENHANCE} {ENH_IN} --out {{out}}".replace("{rrdb}", "{root}/nope.pth"),
        "checkpoint not found",
    ),
    err(
        "enhance/checkpoint-garbage",
        f"{ENHANCE} {ENH_IN} --out {{out}}".replace("{rrdb}", "{ckpt_text}"),
        "cannot be read",
    ),
    err(
        "enhance/checkpoint-foreign",
        f"{ENHANCE} {ENH_IN} --out {{out}}".replace("{rrdb}", "{model}/vae/diffusion_pytorch_model.safetensors"),
        "RRDBNet",
    ),
    err(
        "enhance/batch-zero",
        f"{ENHANCE} {ENH_IN} --out {{out}}".replace("--batch-size 1", "--batch-size 0"),
        "--batch-size",
    ),
    err("enhance/outscale-zero", f"{ENHANCE} {ENH_IN} --outscale 0 --out {{out}}", "--outscale"),
    err("enhance/half-cpu", f"{ENHANCE} {ENH_IN} --half --device cpu --out {{out}}", "--half"),
    err("enhance/device-cuda", f"{ENHANCE} {ENH_IN} --device cuda --out {{out}}", "no CUDA device"),
    err("enhance/out-is-file", f"{ENHANCE} {ENH_IN} --out {{text_file}}", "is a file"),
    err("enhance/out-read-only", f"{ENHANCE} {ENH_IN} --out {{read_only}}", "cannot write"),
    # the parser itself
    err("cli/no-command", "", "command"),
    err("cli/unknown-command", "generat fields", "generat"),
    err("cli/data-no-command", "data", "required"),
]
