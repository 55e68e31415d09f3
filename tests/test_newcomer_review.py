"""What a newcomer's review of the command line found: ``ragkit train``'s ``learned:`` line printed an estimate
as ``0.696`` beside ``0.6959`` (4 significant digits, a trailing zero dropped), and whether ``--help`` gives
the options' defaults."""

from __future__ import annotations

import pytest


class _Learned:
    def __init__(self, learned: dict) -> None:
        self._learned = learned

    def learned(self) -> dict:
        return self._learned


def test_the_learned_line_prints_estimates_with_four_decimals(capsys):
    from ragkit.cli._train import _print_learned

    _print_learned(_Learned({"pipeline[3].rrf": {
        "queries": 809, "weights": [0.5, 0.25, 0.125], "kept": False, "cv_ndcg@10": 0.6959, "train_ndcg@10": 0.696,
        "uniform_cv_ndcg@10": 0.7}}))
    out = capsys.readouterr().out
    assert "cv_ndcg@10 0.6959, train_ndcg@10 0.6960, uniform_cv_ndcg@10 0.7000" in out, out
    assert "queries 809, weights [0.5, 0.25, 0.125], kept False" in out, out  # (the rest as before)


@pytest.mark.parametrize(("command", "defaults"), [
    ("compare", ["200000", "0.05", "ndcg@10,recall@100", "[default: test]", "[default: 1]"]),
    ("eval", ["10,100", "[default: test]", "[default: local]", "[default: ragkit]"]),
    ("train", ["[default: train]", "[default: 0]"]),
])
def test_help_gives_the_defaults(command, defaults):
    from typer.testing import CliRunner

    from ragkit.cli import app

    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())  # (click's plain help wraps; a range follows a default: [default: 0; x>=0])
    for default in defaults:
        assert default in flat or default.rstrip("]") + ";" in flat, (default, res.output)
    assert "[default: None]" not in res.output and "[default: False]" not in res.output, res.output
