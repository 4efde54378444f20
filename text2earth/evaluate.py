"""Evaluation entry point: compose ``conf/evaluate.yaml``, run, print the table. Nothing else lives here.

``text2earth evaluate eval_data=rsicd eval_data.json=/data/rsicd/dataset_rsicd.json model=/models/Text2Earth``
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from text2earth.config import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from text2earth.eval.report import table
    from text2earth.eval.runner import run_evaluation

    report = run_evaluation(cfg)
    print(table(report))
    print(f"report: {cfg.out_dir}/report.json ({report['wall_s']:.0f} s)")


def main(overrides: list[str] | None = None) -> None:
    """Run an evaluation with Hydra overrides (``eval_data=rsicd metrics=[fid] key=value ...``)."""
    if overrides is not None:
        sys.argv = [sys.argv[0], *overrides]
    _hydra_main()


if __name__ == "__main__":
    main()
