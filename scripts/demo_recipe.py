"""Package a `make demo-train` run as the shipped demo model folder, with its recipe written inside."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from text2earth.core.paths import project_root, weights_dir
from text2earth.io.files import atomic_directory


def package(run_dir: str, out_dir: str, ae_steps: int, unet_steps: int) -> Path:
    run = Path(run_dir)
    model = run / "model"
    if not (model / "model_index.json").exists():
        raise FileNotFoundError(f"{model} holds no exported model: did `make demo-train` finish?")
    ae = json.loads((run / "autoencoder" / "run_summary.json").read_text())
    unet = json.loads((run / "unet" / "run_summary.json").read_text())
    recipe = {
        "command": f"make demo-train DEMO_AE_STEPS={ae_steps} DEMO_UNET_STEPS={unet_steps}",
        "data": "embedded real Landsat-8 / Sentinel-2 tiles (text2earth data build-embedded), 64 px",
        "autoencoder": {"steps": ae["global_step"], "wall_s": ae["wall_s"], "metrics": ae["metrics"]},
        "unet": {"steps": unet["global_step"], "wall_s": unet["wall_s"], "metrics": unet["metrics"]},
        "unet_steps": unet["global_step"],
        "hardware": unet["hardware"],
        "weights": "UNet = EMA weights; text encoder = random frozen tiny CLIP text tower (seed 0)",
    }
    out = Path(out_dir)
    with atomic_directory(out) as tmp:
        shutil.copytree(model, tmp)
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2))
        (tmp / "RECIPE.md").write_text(
            "# Demo model recipe\n\n"
            f"Trained by `{recipe['command']}` on {recipe['hardware']}.\n\n"
            f"- autoencoder: {ae['global_step']} steps, {ae['wall_s'] / 60:.1f} min, "
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
    args = parser.parse_args()
    print(f"packaged {package(args.run, args.out, args.ae_steps, args.unet_steps)}")


if __name__ == "__main__":
    main()
