"""The one Hydra runner of ``text2earth train`` and ``text2earth evaluate`` (Compose API, no ``sys.argv``).

Composition problems (an unknown option or key, bad override syntax, a missing value) become a
:class:`~text2earth.core.errors.UserError` with one line, so the CLI reports them like every other
mistake: one line on stderr and exit code 2. The composed config is saved in the run folder's
``.hydra/`` as ``@hydra.main`` would, so a run can be reproduced from its folder.
"""

from __future__ import annotations

import difflib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from hydra.errors import HydraException, InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from text2earth.core.config import compose_config, without_hydra
from text2earth.core.errors import USER_ERRORS, UserError
from text2earth.core.paths import conf_dir
from text2earth.io.files import write_atomic
from text2earth.io.outputs import check_writable_folder

T = TypeVar("T")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _is_group(override_key: str) -> bool:
    """``experiment`` / ``+trainer`` name a config group (a folder of option files), not a key."""
    return (conf_dir() / override_key.lstrip("+~").replace(".", "/")).is_dir()


def _group_hint(config_name: str, overrides: Sequence[str]) -> str:
    """'did you mean ...' for ``group=option`` overrides whose option file does not exist."""
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        group = conf_dir() / key.replace(".", "/")
        if value and _is_group(key) and not (group / f"{value}.yaml").is_file():
            options = sorted(p.stem for p in group.glob("*.yaml"))
            close = difflib.get_close_matches(value, options, n=1)
            hint = f"did you mean {key}={close[0]}?" if close else f"options: {', '.join(options)}"
            return f"no {key} config named {value!r} ({hint})"
    return ""


def _key_hint(cfg_keys: DictConfig, overrides: Sequence[str]) -> str:
    """'did you mean ...' for ``a.b=value`` overrides whose key does not exist."""
    for override in overrides:
        if override.startswith(("+", "~")) or "=" not in override:
            continue
        key = override.split("=", 1)[0]
        if _is_group(key):  # a group choice, checked by _group_hint
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg_keys, parent) if parent else cfg_keys
        if isinstance(node, DictConfig) and leaf not in node:
            close = difflib.get_close_matches(leaf, [str(k) for k in node], n=1)
            hint = f"did you mean {parent + '.' if parent else ''}{close[0]}?" if close else "add it with +KEY=VALUE"
            return f"no config key {key!r} ({hint})"
    return ""


def compose_or_explain(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """``compose_config``, with Hydra's multi-line reports turned into a one-line :class:`UserError`."""
    try:
        return compose_config(config_name, list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        hint = _group_hint(config_name, overrides)
        if not hint:
            groups = [o for o in overrides if _is_group(o.split("=")[0])]
            try:  # compose with the group choices only, then find the key that does not exist
                hint = _key_hint(compose_config(config_name, groups), overrides)
            except (HydraException, OmegaConfBaseException):
                hint = ""
        raise UserError(f"{config_name}: {hint or _first_line(exc)}") from None


def save_run_config(cfg: DictConfig) -> Path:
    """``<run>/.hydra/config.yaml`` and ``overrides.yaml``, as ``@hydra.main`` writes them."""
    out = Path(cfg.hydra.runtime.output_dir) / ".hydra"
    write_atomic(out / "config.yaml", OmegaConf.to_yaml(without_hydra(cfg)).encode())
    write_atomic(out / "overrides.yaml", OmegaConf.to_yaml(list(cfg.hydra.overrides.task)).encode())
    return out


def is_launching_rank(cfg: DictConfig) -> bool:
    """False in the extra processes of a multi-process launch, which must not rewrite the run's ``.hydra/``.

    Lightning relaunches its DDP ranks with ``hydra.output_subdir=null`` (as ``@hydra.main`` runs would skip
    the folder); ``torchrun`` and ``srun`` start every rank themselves and set ``RANK`` / ``SLURM_PROCID``.
    """
    if cfg.hydra.get("output_subdir", ".hydra") is None:
        return False
    return int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0) == 0


def run_config(
    config_name: str,
    overrides: Sequence[str] | None,
    app: Callable[[DictConfig], T],
    check: Callable[[DictConfig], None] | None = None,
) -> T:
    """Compose ``config_name`` with ``overrides`` (``None``: none) and run ``app(cfg)`` in the resolved run folder.

    ``check(cfg)`` runs first, before the run folder is made: a mistake it finds leaves nothing behind.
    """
    cfg = compose_or_explain(config_name, list(overrides or []))
    run_dir = Path(cfg.hydra.runtime.output_dir)
    fresh = not run_dir.exists()
    try:
        return _run(config_name, cfg, app, check)
    except USER_ERRORS:
        if fresh and is_launching_rank(cfg):
            _remove_failed_start(run_dir)
        raise


def _remove_failed_start(run_dir: Path) -> None:
    """A run folder this command created, for a run that failed on a user error before its first checkpoint:
    removed, so that a mistake leaves nothing behind (and a later ``resume=`` never finds a run that never ran)."""
    if run_dir.is_dir() and not any(run_dir.rglob("*.ckpt")):
        shutil.rmtree(run_dir, ignore_errors=True)


def _run(
    config_name: str, cfg: DictConfig, app: Callable[[DictConfig], T], check: Callable[[DictConfig], None] | None
) -> T:
    try:
        check_writable_folder(cfg.hydra.runtime.output_dir, flag="hydra.run.dir")
        if check is not None:
            check(cfg)
        Path(cfg.hydra.runtime.output_dir).mkdir(parents=True, exist_ok=True)
        if is_launching_rank(cfg):
            save_run_config(cfg)
        return app(cfg)
    except OmegaConfBaseException as exc:  # a value that does not resolve or has the wrong type
        raise UserError(f"{config_name}: {_first_line(exc)}") from None
    except InstantiationException as exc:
        # Hydra wraps what a constructor raised: a user error inside (a missing package, a bad value), a value
        # of the wrong type (a TypeError from the constructor) or a _target_ that cannot be located is reported
        # as one line; anything else is a bug and stays loud.
        cause = exc.__cause__
        if str(exc).startswith("Error locating target"):
            raise UserError(f"{config_name}: {_first_line(exc).split(', set env var')[0]}") from None
        if cause is None or isinstance(cause, USER_ERRORS):
            raise UserError(f"{config_name}: {_first_line(cause or exc)}") from None
        if isinstance(cause, TypeError):
            target = str(exc).split("'")[1] if "'" in str(exc) else "an object"
            raise UserError(
                f"{config_name}: cannot build {target} from the config ({_first_line(cause)}): a value of the wrong type?"
            ) from None
        raise
