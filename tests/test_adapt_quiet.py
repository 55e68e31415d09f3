"""A fine-tune (``dense: {adapt: ...}``) printed sentence-transformers' and transformers' progress bars
("Loading weights", "Computing widget examples", "Writing model shards") and the trainer's
``{'train_runtime': ...}`` dict amid a command's output; then it printed nothing at all, so a Python user
fitting ``examples/learned.yaml`` waited 12 minutes without a sign (its one ragkit note is INFO, which Python
does not show by default).  Now a fine-tune that trains shows the trainer's bar on stderr, what it counts
named, and nothing else; a cached one prints nothing."""

from __future__ import annotations

import logging
import re

import pytest

from ragkit import Corpus, TrainSet

pytest.importorskip("datasets")
pytest.importorskip("accelerate")

TOPICS = ["stem cells", "protein folding", "vitamin d", "bone density", "insulin resistance", "gut bacteria"]


def test_a_fine_tune_shows_the_trainers_bar_alone_and_a_cached_one_nothing(tmp_path, monkeypatch, capfd, caplog):
    from ragkit.encoders import adapt as adapt_mod
    from ragkit.encoders.adapt import AdaptConfig

    try:
        from ragkit.encoders.sentence import get_encoder

        get_encoder("all-MiniLM-L6-v2").model  # noqa: B018 (loaded here: offline without it, skip)
    except Exception as e:  # pragma: no cover - no model at hand
        pytest.skip(f"all-MiniLM-L6-v2 not available: {e}")
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    texts = [f"{t} {w}" for t in TOPICS for w in ("study in patients", "trial results", "review of mechanisms")]
    corpus = Corpus(ids=[f"doc-{i}" for i in range(len(texts))], texts=texts)
    train = TrainSet({f"q{i}": f"what about {t}?" for i, t in enumerate(TOPICS)},
                     {f"q{i}": {f"doc-{3 * i}": 1} for i in range(len(TOPICS))})
    config = AdaptConfig(batch_size=4, max_steps=1)
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="ragkit"):
        folder = adapt_mod.adapted_model("all-MiniLM-L6-v2", corpus, train, config)  # the default: progress=None
    out, err = capfd.readouterr()
    assert (folder / "modules.json").is_file()
    assert out == "", out  # (the trainer's metrics dict went to stdout)
    assert "train_runtime" not in err, err
    # stderr holds the trainer's bar, each of its draws saying what it counts, and nothing else
    draws = [d.strip() for d in re.split(r"[\r\n]", err) if d.strip()]
    assert draws and all(re.match(r"fine-tuning all-MiniLM-L6-v2: +\d+%\|", d) for d in draws), err
    assert "1/1" in draws[-1], draws
    notes = [r.getMessage() for r in caplog.records if r.name.startswith("ragkit")]
    assert len(notes) == 1 and notes[0].startswith("fine-tuning all-MiniLM-L6-v2 on 6 judged training queries"), notes

    caplog.clear()  # trained once: the second call loads the cached model, and says nothing
    monkeypatch.setattr(adapt_mod, "fine_tune", lambda *a, **kw: pytest.fail("trained twice"))
    with caplog.at_level(logging.INFO, logger="ragkit"):
        assert adapt_mod.adapted_model("all-MiniLM-L6-v2", corpus, train, config) == folder
    assert capfd.readouterr() == ("", "")
    assert not [r for r in caplog.records if r.name.startswith("ragkit")]


def test_no_bar_under_a_rich_live_display(monkeypatch):
    """Under the command line's spinner on a terminal (a rich live display redirecting stderr) a bar comes out
    as a blank line: the fine-tune then draws none (the command line's note says it is fine-tuning)."""
    import sys

    from rich.console import Console
    from rich.file_proxy import FileProxy

    from ragkit.encoders.adapt import _bar_seen

    assert _bar_seen()
    monkeypatch.setattr(sys, "stderr", FileProxy(Console(), sys.stderr))
    assert not _bar_seen()
