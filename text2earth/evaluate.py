"""Evaluation entry point: compose ``conf/evaluate.yaml``, run, print the table. Nothing else lives here.

``text2earth evaluate eval_data=rsicd eval_data.json=/data/rsicd/dataset_rsicd.json model_dir=/models/Text2Earth``
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from text2earth.config import CONF_DIR

# Hydra turns any exception into a traceback and exit code 1; user errors are carried out of it instead,
# so that the CLI reports them as one line with exit code 2.
_user_errors: list[Exception] = []


@hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from text2earth.cli import USER_ERRORS
    from text2earth.eval.report import table
    from text2earth.eval.runner import run_evaluation

    try:
        report = run_evaluation(cfg)
    except USER_ERRORS as exc:
        _user_errors.append(exc)
        return
    print(table(report))
    print(f"report: {cfg.out_dir}/{cfg.report_name} ({report['wall_s']:.0f} s)")


def main(overrides: list[str] | None = None) -> None:
    """Run an evaluation with Hydra overrides (``eval_data=rsicd metrics=[fid] key=value ...``)."""
    if overrides is not None:
        sys.argv = [sys.argv[0], *overrides]
    _user_errors.clear()
    _hydra_main()
    if _user_errors:
        raise _user_errors.pop()


if __name__ == "__main__":
    main()
