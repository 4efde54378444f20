"""Evaluation: FID/KID (features.py, fid_kid.py), CLIP score, zero-shot OA, resolution fidelity,
generation for evaluation, real evaluation sets, the report, and the run that ties them (runner.py)."""
