"""Run one case of the sweep in this process (``text2earth.cli.main.main(argv)``) and judge its outcome."""

from __future__ import annotations

import contextlib
import io
import shutil
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.faults.cases import Case, no_tmp


@dataclass
class Outcome:
    case: Case
    verdict: str  # "one-line" | "correct" | "traceback" | "multi-line" | "wrong-exit" | "wrong-result" | "wrote"
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.verdict == ("correct" if self.case.match is None else "one-line")


def case_folder(root: Path, case: Case) -> Path:
    return root / "cases" / case.name.replace("/", "__")


def argv_of(case: Case, ws: dict[str, str], folder: Path) -> list[str]:
    names = {**ws, "out": str(folder / "out"), "out_png": str(folder / "out.png")}
    return [part.format(**names) for part in case.argv]


def run_case(case: Case, ws: dict[str, str]) -> Outcome:
    from text2earth.cli.main import main

    folder = case_folder(Path(ws["root"]), case)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    argv = argv_of(case, ws, folder)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # noqa: BLE001 - a traceback is what the sweep counts
            if isinstance(exc, KeyboardInterrupt):
                raise
            return Outcome(case, "traceback", "".join(traceback.format_exception_only(exc)).strip()[:300])
    stderr = err.getvalue().strip()
    marker = Path(ws["pwned"])
    if marker.exists():
        marker.unlink()
        return Outcome(case, "wrong-result", "ran a shell command named in the data")
    if case.match is None:
        if code != 0:
            return Outcome(case, "wrong-exit", f"exit {code}: {stderr[-300:]}")
        try:
            case.check(ws, folder)
            no_tmp(folder)
        except Exception as exc:  # noqa: BLE001
            return Outcome(case, "wrong-result", f"{type(exc).__name__}: {exc}"[:300])
        return Outcome(case, "correct")
    if code == 0:
        return Outcome(case, "wrong-result", "accepted silently")
    lines = stderr.splitlines()
    if "Traceback" in stderr:
        return Outcome(case, "traceback", stderr[-300:])
    if code != 2:
        return Outcome(case, "wrong-exit", f"exit {code}: {stderr[-300:]}")
    if len(lines) != 1 or not lines[0].startswith("text2earth: error:"):
        return Outcome(case, "multi-line", stderr[-300:])
    written = [str(p.relative_to(folder)) for p in folder.rglob("*")]
    if written:
        return Outcome(case, "wrote", f"left behind: {written[:5]}")
    if case.match.lower() not in lines[0].lower():
        return Outcome(case, "one-line-unexpected", lines[0])
    return Outcome(case, "one-line", lines[0])


def summary(outcomes: list[Outcome]) -> dict[str, Counter]:
    """Per command: how many cases, and how many of each verdict."""
    table: dict[str, Counter] = {}
    for o in outcomes:
        table.setdefault(o.case.command, Counter())[o.verdict] += 1
    return table
