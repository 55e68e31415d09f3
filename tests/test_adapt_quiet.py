"""A fine-tune (``dense: {adapt: ...}``) printed sentence-transformers' and transformers' progress bars
("Loading weights", "Computing widget examples", the trainer's steps, "Writing model shards") and the
trainer's ``{'train_runtime': ...}`` dict amid a command's output; it now says one ragkit line, nothing else."""

from __future__ import annotations

import logging

import pytest

from ragkit import Corpus, TrainSet

pytest.importorskip("datasets")
pytest.importorskip("accelerate")

TOPICS = ["stem cells", "protein folding", "vitamin d", "bone density", "insulin resistance", "gut bacteria"]


def test_a_fine_tune_prints_nothing_but_its_ragkit_note(tmp_path, monkeypatch, capfd, caplog):
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
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="ragkit"):
        folder = adapt_mod.adapted_model("all-MiniLM-L6-v2", corpus, train, AdaptConfig(batch_size=4, max_steps=1))
    out, err = capfd.readouterr()
    assert (folder / "modules.json").is_file()
    assert "train_runtime" not in out + err and "it/s" not in out + err and "%|" not in out + err, (out, err)
    assert out == "", out
    notes = [r.getMessage() for r in caplog.records if r.name.startswith("ragkit")]
    assert len(notes) == 1 and notes[0].startswith("fine-tuning all-MiniLM-L6-v2 on 6 judged training queries"), notes
