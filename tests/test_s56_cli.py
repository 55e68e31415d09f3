"""Command-line fixes of session 56: ``train --seed`` with no report, ``--k`` items, ``--data`` suggestions,
``validate`` without torch, ``ask --cache-dir`` as a path."""

from __future__ import annotations

from pathlib import Path

from conftest import cli, tiny_beir


# ------------------------------------------------------------------ 1. train --seed with no held-out report
def test_train_refuses_seed_with_no_report(tmp_path: Path) -> None:
    """``--seed`` draws only the held-out report's fold: with --no-report it was silently ignored."""
    data = tiny_beir(tmp_path / "tiny")
    res = cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "out", "--seed", "5", "--no-report")
    assert res.exit_code == 2, res.output
    assert "--seed 5" in res.output and "would be ignored" in res.output
    assert not (tmp_path / "out").exists()  # refused before anything is fitted or saved


def test_train_notes_an_unused_seed_when_the_report_is_skipped(tmp_path: Path) -> None:
    """A pipeline that learns nothing skips the report by itself: --seed is then noted as unused."""
    data = tiny_beir(tmp_path / "tiny")
    res = cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "out", "--seed", "5")
    assert res.exit_code == 0, res.output
    assert "--seed 5 is not used" in res.output
    res = cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "out2")
    assert res.exit_code == 0, res.output
    assert "--seed" not in res.output


# ------------------------------------------------------------------ 2. eval --k: empty and repeated items
def test_eval_k_refuses_empty_and_repeated_items(tmp_path: Path) -> None:
    """``--k 10,,100`` and ``--k 10,10`` were taken silently (the empty item dropped, the repeat kept once),
    where --data refuses an empty or repeated item: refused now, as a usage error (exit status 2)."""
    data = tiny_beir(tmp_path / "tiny")
    for k, said in (("10,,100", "an empty item"), ("10,", "an empty item"), ("10,10", "the cut-off 10 is listed twice"),
                    ("10,010", "'10' and '010' are both the cut-off 10")):
        res = cli("eval", "--data", data, "-p", "bm25", "--k", k)
        assert res.exit_code == 2, (k, res.output)
        assert said in res.output and "--k" in res.output, (k, res.output)
    res = cli("eval", "--data", data, "-p", "bm25", "--k", " 5 , 10")
    assert res.exit_code == 0, res.output
    assert "ndcg@5" in res.output and "ndcg@10" in res.output
