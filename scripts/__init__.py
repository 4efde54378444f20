"""Demos, benchmarks and recipes: scripts on top of the library (run from the repository, not installed)."""
