"""Where the configs, shipped weights and default run folders are: one resolver, any working directory.

Looked up in this order:
1. ``TEXT2EARTH_CONF`` / ``TEXT2EARTH_WEIGHTS`` / ``TEXT2EARTH_ROOT`` (environment), when set;
2. the source checkout this package was imported from (an editable install or a clone on ``sys.path``);
3. the copies a regular (non-editable) install puts under ``<prefix>/share/text2earth/`` (pyproject data-files).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from text2earth.core.errors import UserError

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def checkout_root() -> Path | None:
    """The repository root when this package runs from a source checkout, else ``None``."""
    root = _PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / "conf").is_dir():
        return root
    return None


def _installed_share() -> list[Path]:
    """``<prefix>/share/text2earth`` of the install this package came from, then of the running interpreter."""
    prefixes = []
    if len(_PACKAGE_DIR.parents) > 3:  # <prefix>/lib/pythonX.Y/site-packages/text2earth (--prefix, --user, venv)
        prefixes.append(_PACKAGE_DIR.parents[3])
    prefixes += [Path(p) for p in (sysconfig.get_path("data"), sys.prefix) if p]
    return [prefix / "share" / "text2earth" for prefix in dict.fromkeys(prefixes)]


def _find(env: str, name: str) -> Path:
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser().resolve()
    root = checkout_root()
    candidates = ([root / name] if root else []) + [share / name for share in _installed_share()]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise UserError(f"cannot find the text2earth {name}/ folder (looked in {[str(c) for c in candidates]}); set {env}")


def conf_dir() -> Path:
    """The Hydra config folder (``conf/``)."""
    return _find("TEXT2EARTH_CONF", "conf")


def weights_dir() -> Path:
    """The folder of shipped weights (``weights/``: demo model, translators, enhancer)."""
    return _find("TEXT2EARTH_WEIGHTS", "weights")


def shipped(name: str) -> Path:
    """A shipped weight folder or file by its name under ``weights/`` (``demo``, ``translate/pan2rgb``)."""
    path = weights_dir() / name
    if not path.exists():
        available = sorted(p.relative_to(weights_dir()).as_posix() for p in weights_dir().glob("*/*") if p.is_dir())
        raise UserError(f"no shipped weights named {name!r} in {weights_dir()} (shipped: {', '.join(available)})")
    return path


def project_root() -> Path:
    """Where default ``data/``, ``logs/`` and ``outputs/`` go: ``TEXT2EARTH_ROOT``, the checkout, else the cwd."""
    if os.environ.get("TEXT2EARTH_ROOT"):
        return Path(os.environ["TEXT2EARTH_ROOT"]).expanduser().resolve()
    return checkout_root() or Path.cwd()


def relative_model_path(spec: str | Path, base: Path) -> Path:
    """A model folder named in a JSON file: relative paths are taken from that file's folder."""
    path = Path(spec).expanduser()
    return path if path.is_absolute() else (base / path).resolve()
