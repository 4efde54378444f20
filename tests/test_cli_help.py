"""One CLI vocabulary: every flag has help, help shows defaults, one meaning per flag name."""

import argparse
from pathlib import Path

import pytest

from text2earth.cli.main import build_parser, main
from text2earth.pipelines.schedulers import SCHEDULERS


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("text2earth",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_argument_of_every_subcommand_has_help():
    missing = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not action.help:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_help_shows_defaults_and_the_complete_scheduler_list(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 50)" in text  # --steps
    assert "(default: 4.0)" in text  # --guidance
    for name in SCHEDULERS:
        assert name in text


def test_out_is_the_output_flag_everywhere_and_tile_has_one_meaning():
    for path, parser in _parsers(build_parser()):
        flags = {flag for action in parser._actions for flag in action.option_strings}
        shown = {f for a in parser._actions if a.help != argparse.SUPPRESS for f in a.option_strings}
        assert "--output-dir" not in shown, path
        assert not {"--output", "--out-dir"} & flags, path
        if path[-1] == "enhance":
            assert "--out" in flags and "--tile-size" in flags and "--tile" not in flags
        if path[-1] == "build-embedded":
            assert "--tile" not in flags


def test_enhance_keeps_the_old_output_dir_spelling_hidden():
    parser = build_parser()
    old = parser.parse_args(["enhance", "--input-dir", "a", "--output-dir", "b", "--checkpoint", "c"])
    new = parser.parse_args(["enhance", "--input-dir", "a", "--out", "b", "--checkpoint", "c"])
    assert old.out == new.out == "b"


def test_translate_without_a_shipped_translator_names_the_shipped_ones(tmp_path, capsys):
    (tmp_path / "in.png").write_bytes(b"")
    assert main(["translate", str(tmp_path / "in.png"), "--task", "dehaze", "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "pan2rgb" in err and "nir2rgb" in err and "--translator" in err


def test_outputs_default_to_new_folders_under_the_project_outputs(tmp_path, monkeypatch):
    from text2earth.cli.parser import fill_default_out

    monkeypatch.setenv("TEXT2EARTH_ROOT", str(tmp_path))
    parser = build_parser()
    for argv, name, suffix in (
        (["generate", "fields", "--model", "m"], "generate", ""),
        (["edit", "a.png", "m.png", "x", "--model", "m"], "edit", ".png"),
        (["translate", "p.png", "--task", "pan2rgb"], "translate", ".png"),
        (["enhance", "--input-dir", "d", "--checkpoint", "c"], "enhance", ""),
        (["data", "stats", "s.tar"], "stats", ""),
        (["export", "last.ckpt"], "export", ""),
    ):
        args = parser.parse_args(argv)
        fill_default_out(args)
        out = Path(args.out)
        assert out.parent == tmp_path / "outputs" / name and out.name.endswith(suffix), argv
    explicit = parser.parse_args(["generate", "fields", "--model", "m", "--out", "mine"])
    fill_default_out(explicit)
    assert explicit.out == "mine"
