"""Package a `make demo-train` run as the shipped demo model folder, with its recipe written inside."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from text2earth.core.paths import project_root, weights_dir
from text2earth.io.files import atomic_directory


def _autoencoder(run: Path, vae: str | None) -> dict:
    """Stage 1 as trained in this run, or as the recipe of the reused autoencoder recorded it."""
    if vae is None:
        ae = json.loads((run / "autoencoder" / "run_summary.json").read_text())
        return {"steps": ae["global_step"], "wall_s": ae["wall_s"], "metrics": ae["metrics"]}
    previous = json.loads((run / "vae_recipe.json").read_text())["autoencoder"]
    return {**previous, "reused_from": previous.get("reused_from", vae)}


def package(
    run_dir: str, out_dir: str, ae_steps: int, unet_steps: int, text_encoder: str | None = None, vae: str | None = None
) -> Path:
    run = Path(run_dir)
    model = run / "model"
    if not (model / "model_index.json").exists():
        raise FileNotFoundError(f"{model} holds no exported model: did `make demo-train` finish?")
    ae = _autoencoder(run, vae)
    unet = json.loads((run / "unet" / "run_summary.json").read_text())
    command = f"make demo-train DEMO_AE_STEPS={ae_steps} DEMO_UNET_STEPS={unet_steps}"
    command += f" DEMO_TEXT_ENCODER={text_encoder or ''}" + (f" DEMO_VAE={vae}" if vae else "")
    tower = (
        f"the text tower of {text_encoder} (trained with the sigmoid loss on the embedded captions), frozen"
        if text_encoder
        else "random frozen tiny CLIP text tower (seed 0)"
    )
    recipe = {
        "command": command,
        "data": "embedded real Landsat-8 / Sentinel-2 tiles (text2earth data build-embedded), 64 px",
        "autoencoder": ae,
        "unet": {"steps": unet["global_step"], "wall_s": unet["wall_s"], "metrics": unet["metrics"]},
        "unet_steps": unet["global_step"],
        "hardware": unet["hardware"],
        "weights": f"UNet = EMA weights; text encoder = {tower}",
    }
    reused = f" (reused: {ae['reused_from']})" if "reused_from" in ae else ""
    out = Path(out_dir)
    with atomic_directory(out) as tmp:
        shutil.copytree(model, tmp)
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2))
        (tmp / "RECIPE.md").write_text(
            "# Demo model recipe\n\n"
            f"Trained by `{recipe['command']}` on {recipe['hardware']}.\n\n"
            f"- autoencoder{reused}: {ae['steps']} steps, {ae['wall_s'] / 60:.1f} min, "
            f"val PSNR {ae['metrics'].get('val/psnr', float('nan')):.1f} dB\n"
            f"- UNet: {unet['global_step']} steps, {unet['wall_s'] / 60:.1f} min, "
            f"val loss {unet['metrics'].get('val/loss', float('nan')):.4f}\n"
            f"- data: {recipe['data']}\n- {recipe['weights']}\n"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default=str(project_root() / "outputs/demo_train"))
    parser.add_argument("--out", default=str(weights_dir() / "demo"))
    parser.add_argument("--ae-steps", type=int, required=True)
    parser.add_argument("--unet-steps", type=int, required=True)
    parser.add_argument("--text-encoder", default=None, help="the CLIPModel folder whose text tower was used")
    parser.add_argument("--vae", default=None, help="the reused autoencoder folder (no stage 1 in this run)")
    args = parser.parse_args()
    out = package(args.run, args.out, args.ae_steps, args.unet_steps, args.text_encoder, args.vae)
    print(f"packaged {out}")


if __name__ == "__main__":
    main()
