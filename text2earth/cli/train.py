"""``text2earth train``: compose ``conf/train.yaml`` (one Hydra runner), fit, print where it went.

``resume=RUN_DIR`` continues a run from its folder: the overrides it was started with (its
``.hydra/overrides.yaml``), then any given now, in that folder, from its newest whole checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from text2earth.core.errors import UserError


def resume_overrides(overrides: list[str]) -> list[str]:
    """``overrides`` with ``resume=RUN_DIR`` replaced by what continues that run (no ``resume=``: unchanged)."""
    asked = [o for o in overrides if o.startswith("resume=")]
    if not asked:
        return overrides
    from omegaconf import OmegaConf

    run = Path(asked[-1].split("=", 1)[1]).expanduser().resolve()
    saved = run / ".hydra" / "overrides.yaml"
    if not run.is_dir():
        raise UserError(f"resume={run}: the run folder does not exist")
    if not saved.is_file():
        raise UserError(f"resume={run}: not a training run folder (no .hydra/overrides.yaml from `text2earth train`)")
    drop = ("hydra.run.dir=", "ckpt_path=", "resume=")
    previous = [str(o) for o in OmegaConf.load(saved) if not str(o).startswith(drop)]
    # hydra.run.dir is the run's own (Lightning's relaunch of DDP ranks appends it again: one value, not two);
    # a ckpt_path given now (a step file of this run, say) wins over the newest checkpoint.
    now = [o for o in overrides if not o.startswith(("resume=", "hydra.run.dir="))]
    resume_from = [] if any(o.startswith("ckpt_path=") for o in now) else ["ckpt_path=last"]
    return [*previous, *now, f"hydra.run.dir={run}", *resume_from]


def main(overrides: list[str] | None = None) -> dict[str, Any]:
    """Run training with Hydra overrides (``experiment=NAME key=value ...``, or ``resume=RUN_DIR``)."""
    from text2earth.cli.hydra_runner import run_config
    from text2earth.training.run import check_before_training, train

    result = run_config("train", resume_overrides(list(overrides or [])), train, check=check_before_training)
    print(f"done: {result['global_step']} steps in {result['wall_s']:.0f} s -> {result['output_dir']}")
    return result
