"""``text2earth train``: compose ``conf/train.yaml`` (one Hydra runner), fit, print where it went."""

from __future__ import annotations

from typing import Any


def main(overrides: list[str] | None = None) -> dict[str, Any]:
    """Run training with Hydra overrides (``experiment=NAME key=value ...``)."""
    from text2earth.cli.hydra_runner import run_config
    from text2earth.training.run import train

    result = run_config("train", overrides, train)
    print(f"done: {result['global_step']} steps in {result['wall_s']:.0f} s -> {result['output_dir']}")
    return result
