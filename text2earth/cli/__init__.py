"""The `text2earth` console script: argparse subcommands and the Hydra runner."""
