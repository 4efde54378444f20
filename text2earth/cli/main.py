"""The `text2earth` console script: thin subcommands over the library.

Bad input (unknown model folder, hub id without a local copy, bad level, missing file) prints one
line on stderr and exits with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from text2earth.cli import checks
from text2earth.cli import serve as serve_cli
from text2earth.cli.location import add_location_options, georeference_outputs, given_level, resolve_location
from text2earth.core.errors import USER_ERRORS


def _generate(args: argparse.Namespace) -> int:
    from text2earth.apps.generate import generate_from_png, generate_to_folder
    from text2earth.core.errors import UserError

    checks.before_generate(args)
    if args.from_png:
        if args.prompt:
            raise UserError("give either prompts or --from PNG, not both")
        written = generate_from_png(args.from_png, args.out, model=args.model, device=args.device)
        print(f"made {args.from_png} again: {written[0]}")
        return 0
    if not args.prompt or not args.model:
        raise UserError("give one or more prompts and --model FOLDER (or --from PNG to make an image again)")
    location = resolve_location(args, args.prompt[0])
    written = generate_to_folder(
        prompts=args.prompt,
        model=args.model,
        out_dir=args.out,
        level=args.level,
        gsd_m=args.gsd,
        n=args.n,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        level_guidance=args.level_guidance,
        negative_prompt=args.negative,
        scheduler=args.scheduler,
        height=args.height,
        width=args.width,
        device=args.device,
        modality=args.modality,
        lora=args.lora,
        lora_scale=args.lora_scale,
        fast=args.fast,
        log=print,
    )
    print(f"wrote {len(written) - 1} images and {written[-1]}")
    georeference_outputs(location, written[:-1], given_level(args), model=args.model)
    return 0


def _translate(args: argparse.Namespace) -> int:
    from text2earth.apps.translate import translate_file
    from text2earth.core.resolution import resolve_level

    checks.before_translate(args)
    location = resolve_location(args, args.prompt)
    out = translate_file(
        args.task,
        args.input,
        args.out,
        translator=args.translator or _shipped_translator(args.task),
        model=args.model,
        prompt=args.prompt,
        level=args.level,
        gsd_m=args.gsd,
        steps=args.steps,
        guidance=args.guidance,
        conditioning_scale=args.conditioning_scale,
        seed=args.seed,
        dn_range=tuple(args.dn_range) if args.dn_range else "auto",
        bits=args.bits,
        device=args.device,
    )
    print(f"{args.task}: {args.input} -> {out}")
    level = resolve_level(args.level, args.gsd)
    georeference_outputs(location, [out], level, prompt=args.prompt, seed=args.seed, model=args.task)
    return 0


def _shipped_translator(task: str) -> str:
    """The shipped translator of ``task``; a task without one names those that are shipped."""
    from text2earth.core.errors import UserError
    from text2earth.core.paths import weights_dir

    folders = weights_dir() / "translate"
    if not (folders / task).is_dir():
        names = sorted(p.name for p in folders.iterdir() if p.is_dir()) if folders.is_dir() else []
        raise UserError(
            f"no translator for {task} is shipped (shipped: {', '.join(names) or 'none'}); "
            f"train one (text2earth train experiment=translate_{task.split('_')[0]}) and give --translator FOLDER"
        )
    return str(folders / task)


def _train(args: argparse.Namespace) -> int:
    from text2earth.cli.train import main

    main(args.overrides)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from text2earth.cli.evaluate import main

    main(args.overrides)
    return 0


def _export(args: argparse.Namespace) -> int:
    from text2earth.training.export import export_checkpoint

    checks.before_export(args)
    out = export_checkpoint(args.checkpoint, args.out, use_ema=not args.no_ema, dtype=args.dtype)
    print(f"exported {args.checkpoint} -> {out}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from text2earth.models.components import count_parameters

    counts = count_parameters(args.preset)
    for name, value in counts.items():
        print(f"{name:>13}: {value / 1e6:10.1f} M")
    return 0


def _edit(args: argparse.Namespace) -> int:
    from text2earth.apps.edit import edit_to_file

    checks.before_edit(args)
    location = resolve_location(args, args.prompt)
    out = edit_to_file(
        args.image,
        args.mask,
        args.prompt,
        model=args.model,
        out=args.out,
        level=args.level,
        gsd_m=args.gsd,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        paste_back=args.paste_back,
        feather=args.feather,
        device=args.device,
    )
    print(f"wrote {out}")
    georeference_outputs(location, [out], given_level(args), model=args.model)
    return 0


def _outpaint(args: argparse.Namespace) -> int:
    from text2earth.apps.edit import make_canvas, save_canvas

    checks.before_outpaint(args)
    location = resolve_location(args, args.prompt)
    canvas = make_canvas(
        args.prompt,
        model=args.model,
        width=args.width,
        height=args.height,
        tile=args.window,
        overlap=args.overlap,
        mode=args.mode,
        level=args.level,
        gsd_m=args.gsd,
        init=args.init,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        feather=args.feather,
        device=args.device,
        windows_per_call=args.windows_per_call,
    )
    report = save_canvas(canvas, args.out, model=args.model, seed=args.seed, location=location)
    geo = report.get("geo")
    placed = f" and {geo['cog']} + {geo['stac']}" if geo else " (no COG: give --at or --tile to place it on the map)"
    print(f"wrote {report['png']}{placed}")
    print(
        f"seam visibility ({report['mode']}, {report['tiles']} tiles): {report['seam_ratio']:.3f} "
        f"(mean gradient across seams {report['seam_gradient']:.4f} / inside tiles {report['inside_gradient']:.4f}; 1.0 = invisible)"
    )
    return 0


def _level_or_gsd(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--gsd", type=float, help="ground sample distance in metres per pixel (e.g. 0.5)")
    group.add_argument("--level", type=float, help="zoom level 0..24 (17 = 1 m/px; 0 = unknown)")


def build_parser() -> argparse.ArgumentParser:
    from text2earth.cli.clip import add_parser as add_clip_parser
    from text2earth.cli.data import register as register_data_tools
    from text2earth.cli.enhance import register as register_enhance
    from text2earth.cli.parser import Parser, out_option
    from text2earth.io.bands import TASKS
    from text2earth.pipelines.schedulers import SCHEDULERS

    parser = Parser(prog="text2earth", description="Text-driven remote-sensing image generation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show third-party warnings, tips and summaries")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="text -> images at a chosen ground resolution")
    gen.add_argument(
        "prompt", nargs="*", help="one or more captions (the published '17_GOOGLE_LEVEL_...' form works too)"
    )
    gen.add_argument("--model", help="local model folder in the published Text2Earth layout")
    gen.add_argument(
        "--from",
        dest="from_png",
        metavar="PNG",
        help="make a generated PNG again from the settings in its text chunks (--model, --device may override)",
    )
    _level_or_gsd(gen)
    gen.add_argument("--n", type=int, default=4, help="images per prompt")
    gen.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed + i")
    gen.add_argument("--steps", type=int, default=50, help="denoising steps")
    gen.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale")
    gen.add_argument("--level-guidance", type=float, default=None, help="separate guidance scale for the resolution")
    gen.add_argument("--negative", default=None, help="negative prompt (replaces the empty unconditional caption)")
    gen.add_argument(
        "--scheduler", default=None, help=f"sampler: {' | '.join(SCHEDULERS)} (default: the model folder's own)"
    )
    gen.add_argument("--height", type=int, default=None, help="image height in pixels (default: the model's)")
    gen.add_argument("--width", type=int, default=None, help="image width in pixels (default: the model's)")
    gen.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    gen.add_argument("--modality", default="rgb", help="rgb | nir | pan | sar: loads the model's LoRA (MODEL/lora/M)")
    gen.add_argument("--lora", default=None, help="a LoRA adapter folder (overrides --modality's default adapter)")
    gen.add_argument("--lora-scale", type=float, default=1.0, help="LoRA strength (0 = the base model)")
    gen.add_argument(
        "--fast",
        action="store_true",
        help="compiled UNet/VAE decoder, CUDA graphs on a GPU, fused QKV; reports warm-up and compilations "
        "(the first call compiles: minutes on a CPU)",
    )
    out_option(gen, "output folder", "generate")
    add_location_options(gen)
    gen.set_defaults(func=_generate)

    tr = sub.add_parser("translate", help="image-to-image translation with a ControlNet (pan2rgb, nir2rgb, ...)")
    tr.add_argument("input", help="condition image: single-band PNG/TIFF (8/16 bit) for pan/nir/sar, RGB otherwise")
    tr.add_argument(
        "--task",
        required=True,
        help=f"the translation: {' | '.join(TASKS)}; shipped translators: pan2rgb, nir2rgb, pan2nir "
        "(the others need --translator)",
    )
    out_option(tr, "output image (.png; single-band targets: .png or .tif)", "translate", ".png")
    tr.add_argument("--translator", default=None, help="translator folder (default: weights/translate/TASK)")
    tr.add_argument("--model", default=None, help="base model folder (default: the one the translator names)")
    tr.add_argument("--prompt", default="", help="optional caption")
    _level_or_gsd(tr)
    tr.add_argument("--steps", type=int, default=20, help="denoising steps")
    tr.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance (1 = off)")
    tr.add_argument("--conditioning-scale", type=float, default=1.0, help="strength of the ControlNet's residuals")
    tr.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
    tr.add_argument(
        "--dn-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="16-bit input: DN mapped to 0..1 (default: the image's 1st..99th percentiles; the translator's "
        "translate.json lists the per-sensor stretch it was trained with)",
    )
    tr.add_argument("--bits", type=int, default=8, choices=(8, 16), help="bit depth of a single-band output")
    tr.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    add_location_options(tr)
    tr.set_defaults(func=_translate)

    train = sub.add_parser("train", help="train with Hydra: text2earth train experiment=demo key=value ...")
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="Hydra overrides")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("evaluate", help="FID/KID, CLIP score, zero-shot OA, resolution fidelity (Hydra)")
    evaluate.add_argument("overrides", nargs=argparse.REMAINDER, help="Hydra overrides, e.g. eval_data=rsicd")
    evaluate.set_defaults(func=_evaluate)

    export = sub.add_parser("export", help="training checkpoint -> diffusers folder (EMA weights, safetensors)")
    export.add_argument("checkpoint", help="a training checkpoint (RUN_DIR/checkpoints/last.ckpt)")
    out_option(export, "the diffusers folder to write", "export")
    export.add_argument("--no-ema", action="store_true", help="export the raw trained weights instead of the EMA")
    export.add_argument(
        "--dtype",
        choices=("fp32", "fp16", "bf16"),
        default="fp32",
        help="weights' precision; fp16/bf16 are written as diffusers variants (*.fp16.safetensors)",
    )
    export.set_defaults(func=_export)

    info = sub.add_parser("info", help="parameter counts of a model preset")
    info.add_argument("--preset", default="text2earth_sd2", help="architecture preset: text2earth_sd2 | tiny")
    info.set_defaults(func=_info)

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    register_data_tools(data_sub)

    edit = sub.add_parser("edit", help="repaint the white part of a mask from a prompt (inpainting model)")
    edit.add_argument("image", help="the image to edit (RGB)")
    edit.add_argument("mask", help="single-channel mask of the same size, white = repaint")
    edit.add_argument("prompt", help="what to paint there")
    _sampling_options(edit, "a local folder holding a 9-channel inpainting UNet (Text2Earth-inpainting layout)")
    edit.add_argument("--paste-back", action="store_true", help="keep unmasked pixels exactly (feathered edge)")
    out_option(edit, "output PNG", "edit", ".png")
    add_location_options(edit)
    edit.set_defaults(func=_edit)

    outpaint = sub.add_parser("outpaint", help="an unbounded scene: a canvas grown from tiles at one resolution")
    outpaint.add_argument("prompt", help="the caption of the whole canvas")
    _sampling_options(outpaint, "inpainting folder (--mode tiles) or text-to-image folder (--mode joint)")
    outpaint.add_argument(
        "--mode",
        choices=("tiles", "joint"),
        default="tiles",
        help="tiles: tile by tile with the inpainting model; joint: MultiDiffusion with the text-to-image model",
    )
    outpaint.add_argument("--width", type=int, required=True, help="canvas width in pixels")
    outpaint.add_argument("--height", type=int, required=True, help="canvas height in pixels")
    outpaint.add_argument(
        "--window", type=int, default=256, help="side of each sampling window in pixels (the model's image size)"
    )
    outpaint.add_argument("--overlap", type=int, default=64, help="pixels shared by neighbouring windows")
    outpaint.add_argument(
        "--windows-per-call",
        type=int,
        default=1,
        help="windows denoised in one UNet batch (same canvas; more is faster on a GPU)",
    )
    outpaint.add_argument("--init", default=None, help="image placed at the top-left corner to grow from (tiles mode)")
    out_option(
        outpaint, "output PNG (a .json report beside it; with --at/--tile a COG + STAC item)", "outpaint", ".png"
    )
    add_location_options(outpaint)
    outpaint.set_defaults(func=_outpaint)

    register_enhance(sub)
    serve_cli.add_parser(sub)
    add_clip_parser(sub)
    return parser


def _sampling_options(parser: argparse.ArgumentParser, model_help: str) -> None:
    parser.add_argument("--model", required=True, help=model_help)
    _level_or_gsd(parser)
    parser.add_argument("--steps", type=int, default=50, help="denoising steps")
    parser.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
    parser.add_argument("--feather", type=int, default=8, help="pixels over which new content blends into kept pixels")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")


def main(argv: Sequence[str] | None = None) -> int:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as hf_logging

    from text2earth.cli.parser import fill_default_out
    from text2earth.core.verbosity import configure_console, configure_progress_bars

    configure_progress_bars()
    hf_logging.disable_progress_bar()  # weight-loading bars would bury our own output
    # Loader warnings about a damaged file would precede our one-line report of it.
    hf_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_console(args.verbose)
    fill_default_out(args)
    try:
        code = args.func(args)
    except (*USER_ERRORS, OSError) as exc:  # OSError: a path, permission or full disk, in words
        if os.environ.get("TEXT2EARTH_DEBUG"):
            raise
        print(f"text2earth: error: {checks.error_line(exc)}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
