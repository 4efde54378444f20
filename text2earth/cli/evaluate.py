"""``text2earth evaluate``: compose ``conf/evaluate.yaml`` (one Hydra runner), run, print the table."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig


def _evaluate(cfg: DictConfig) -> dict[str, Any]:
    from text2earth.eval.report import table
    from text2earth.eval.runner import run_evaluation

    report = run_evaluation(cfg)
    print(table(report))
    print(f"report: {cfg.out_dir}/{cfg.report_name} ({report['wall_s']:.0f} s)")
    return report


def main(overrides: list[str] | None = None) -> dict[str, Any]:
    """Run an evaluation with Hydra overrides (``eval_data=rsicd metrics=[fid] key=value ...``)."""
    from text2earth.cli.hydra_runner import run_config

    return run_config("evaluate", overrides, _evaluate)
