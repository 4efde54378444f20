"""Applications: generate, edit, outpaint and translate to files (what the CLI calls)."""
