"""Core: the domain vocabulary (resolution, haze model, user errors, paths, config composition). Imports nothing of text2earth."""
