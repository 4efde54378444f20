"""``python -m tests.faults [NAME_PREFIX ...]``: replay the bad-input sweep and print the counts per command."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def main(prefixes: list[str]) -> int:
    import torch

    from tests.faults.cases import CASES
    from tests.faults.runner import run_case, summary
    from tests.faults.workspace import build_workspace

    torch.set_num_threads(1)
    cases = [c for c in CASES if not prefixes or c.name.startswith(tuple(prefixes))]
    with tempfile.TemporaryDirectory(prefix="t2e_faults_") as tmp:
        ws = build_workspace(Path(tmp) / "ws")
        outcomes = []
        for case in cases:
            outcome = run_case(case, ws)
            outcomes.append(outcome)
            flag = "ok " if outcome.passed else "BAD"
            print(f"{flag} {outcome.verdict:<20} {case.name:<40} {outcome.detail[:160]}", flush=True)
    print("\n| command | cases | one-line exit 2 | correct result | other |\n|---|---|---|---|---|")
    for command, counts in sorted(summary(outcomes).items()):
        other = sum(v for k, v in counts.items() if k not in ("one-line", "correct"))
        print(f"| `{command}` | {sum(counts.values())} | {counts['one-line']} | {counts['correct']} | {other} |")
    passed = sum(o.passed for o in outcomes)
    print(f"\n{passed} of {len(outcomes)} cases as expected")
    return 0 if passed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
