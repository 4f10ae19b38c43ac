"""Every numeric option of every command is read by a bounded type (``commands.integer`` / ``commands.number``): a
value past either bound is one line naming the option, before anything runs."""

import argparse

import pytest

from mmdistill.cli import build_parser, main


def _options(parser: argparse.ArgumentParser, path: str = "mmdistill"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        elif action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


def _numeric(action: argparse.Action) -> bool:
    default = action.default[0] if isinstance(action.default, list) and action.default else action.default
    is_number = isinstance(default, (int, float)) and not isinstance(default, bool)
    return is_number or action.type in (int, float) or hasattr(action.type, "bounds")


def test_every_numeric_option_has_a_lower_and_an_upper_bound():
    numeric = [(path, a) for path, a in _options(build_parser()) if _numeric(a)]
    assert len(numeric) > 40, "the walk over the parsers found the options"
    unbounded = [f"{path} {a.option_strings[0]}" for path, a in numeric if not hasattr(a.type, "bounds")]
    assert not unbounded, f"numeric options without bounds: {unbounded}"
    for path, a in numeric:
        low, high = a.type.bounds
        assert low > -1e300 and high < 1e300, f"{path} {a.option_strings[0]}: bounds {low}, {high}"
        if not getattr(a.type, "open", (False, False))[1]:
            a.type(str(high))  # a closed upper bound is itself accepted
        with pytest.raises(argparse.ArgumentTypeError):
            a.type(str(high * 10 + 1 if high > 0 else 1))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "cfg.yaml", "--seeds", "10001"], "--seeds: must be a positive integer up to 10000, got 10001"),
        (["reproduce", "mfh-gamma", "--epochs", "1e9", "--out", "o"], "--epochs: must be a positive integer up to"),
        (["reproduce", "mfh-table1", "--lam", "2", "--out", "o"], "--lam: must be a number in [0, 1], got 2"),
        (["salience", "--dataset", "venn", "--hidden", "100000", "--out", "o"], "--hidden: must be a positive integer"),
        (["data", "build", "av-mnist", "--snr-db", "1e6"], "--snr-db: must be a number in [-100, 100]"),
        (["advise", "--dataset", "mfeat", "--bootstrap", "100000000"], "--bootstrap: must be a positive integer"),
    ],
)
def test_a_value_past_the_bound_is_named_before_anything_runs(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
