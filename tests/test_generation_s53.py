"""Blank chunks are blank by the rule questions and the encoders use (ragkit._text.is_blank): a chunk of
invisible characters only (a zero-width space, a BOM, a soft hyphen) holds no source."""

from __future__ import annotations

import numpy as np
import pytest

INVISIBLE = ["\u200b", "\ufeff \u00ad", "\u2060\u200c"]  # (each kept by str.strip())


@pytest.mark.parametrize("blank", INVISIBLE)
def test_a_chunk_of_invisible_characters_is_left_out_of_the_prompt(blank):
    """Old code: only str.strip() counted, so a zero-width space chunk was sent to the model as a document."""
    fake = pytest.importorskip("langchain_core.language_models.fake_chat_models")
    from ragkit.generators.langchain_chat import LangChainGenerator

    model = fake.FakeListChatModel(responses=["never"])
    g = LangChainGenerator(model)
    assert g.generate("Why?", [blank]) == ""  # no source left: the model is not called
    assert model.i == 0
    g2 = LangChainGenerator(fake.FakeListChatModel(responses=["ok"]))
    assert g2.generate("Why?", [blank, "Scurvy."]) == "ok"


@pytest.mark.parametrize("blank", INVISIBLE)
def test_the_generate_step_skips_a_query_whose_documents_are_invisible_characters(blank):
    """Old code: the step asked the chat model with a document of a zero-width space only."""
    fake = pytest.importorskip("langchain_core.language_models.fake_chat_models")
    from ragkit.generators.operator import NO_TEXT, Generate
    from ragkit.types import Corpus, Ranking, State

    corpus = Corpus.from_records([{"_id": "d0", "text": blank}, {"_id": "d1", "text": "Scurvy: no vitamin C."}])
    op = Generate(backend="langchain", top_k=1).with_chat_model(fake.FakeListChatModel(responses=["C"]))
    op.fit(corpus)
    rk = [Ranking(np.array([0, 1]), np.array([2.0, 1.0], np.float32)),
          Ranking(np.array([1, 0]), np.array([2.0, 1.0], np.float32))]
    out = op(State(["q0", "q1"], rankings=rk))
    assert out.values["answer"] == ["", "C"]
    assert out.values["answer_skipped"] == [NO_TEXT, None]
