"""Quiet by default, loud on request (``text2earth -v``): what third-party libraries may print, and progress bars.

Without ``-v`` no third-party deprecation, tip, model summary or wandb summary reaches the console; our own
warnings still do. Progress bars appear only on a terminal, so log files get plain lines, not escape codes.
The choice travels in an environment variable so that relaunched ranks and workers make the same one.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

VERBOSE_ENV = "TEXT2EARTH_VERBOSE"
_OWN_MODULES = ("text2earth", "callbacks", "data_modules", "scripts")


def verbose() -> bool:
    """Whether ``-v`` was given (in this process or the one that launched it)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def progress_bars() -> bool:
    """Progress bars only where someone watches them: a terminal."""
    return sys.stderr.isatty()


def configure_progress_bars() -> None:
    """No tqdm bars off a terminal. Call before anything imports tqdm: it reads ``TQDM_*`` defaults at import."""
    if not progress_bars():
        os.environ.setdefault("TQDM_DISABLE", "1")


def configure_console(loud: bool) -> None:
    """Set the console policy for this process and the processes it starts."""
    if loud:
        os.environ[VERBOSE_ENV] = "1"
    configure_progress_bars()
    if verbose():
        return
    os.environ.setdefault("WANDB_SILENT", "true")  # no run banner and no ~30-line summary
    warnings.filterwarnings("ignore")  # third-party deprecations, cast, peft and KID warnings
    for module in _OWN_MODULES:
        warnings.filterwarnings("default", module=module)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()  # e.g. "modules ... should be kept in float32" on a dtype cast


def quiet_lightning() -> None:
    """Without ``-v``: Lightning's tips ("litlogger"), accelerator lines and summaries are INFO records; its
    import sets its loggers to INFO, so this runs after that import, where a Trainer is built."""
    if verbose():
        return
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def trainer_console_options(trainer_cfg: dict) -> dict[str, bool]:
    """Lightning Trainer options of the console policy, where the trainer config does not set them itself."""
    wanted = {"enable_progress_bar": progress_bars(), "enable_model_summary": verbose()}
    return {key: value for key, value in wanted.items() if key not in trainer_cfg}
