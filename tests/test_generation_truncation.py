"""The local generator's cut of a long chunk to ``max_chunk_tokens`` is said, not silent.

A LangChain app joined four retrieved documents (1,485 tokens) into one context string and passed it
as one chunk: the model answered from a 246-token prompt, with no word that the rest was dropped.
The tiny 4-layer test model (``tiny``, byte-level tokenizer: a character per token) keeps this cheap.
"""
from __future__ import annotations

import logging

from test_cachecraft import TINY_Q, tiny  # noqa: F401


def test_a_cut_chunk_is_warned_with_its_length_and_the_parameter(tiny, caplog):  # noqa: F811
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0], max_chunk_tokens=10).load()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        seg = g.segments(TINY_Q, ["a" * 40, "short", "b" * 30, "c" * 15])
    assert [len(c) for c in seg.chunks] == [10, 7, 10, 10]  # cut as before
    warned = [r for r in caplog.records if r.name.startswith("ragkit") and r.levelno == logging.WARNING]
    assert len(warned) == 1, [r.getMessage() for r in warned]  # one warning for the call, not one per chunk
    msg = warned[0].getMessage()
    assert "2 of 4 chunks cut to max_chunk_tokens=10" in msg
    assert "chunk 0 (42 tokens)" in msg and "chunk 2 (32 tokens)" in msg  # 40 / 30 characters + "\n\n"
    assert "chunk 3" not in msg  # (17 tokens kept 10: more than half, a document a little long, not said)
    assert "Raise max_chunk_tokens" in msg and "separate chunks" in msg


def test_chunks_that_fit_are_not_warned(tiny, caplog):  # noqa: F811
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0], max_chunk_tokens=10).load()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        seg = g.segments(TINY_Q, ["abcdefgh", "short"])  # 8 + 2 separator tokens: exactly the limit
    assert [len(c) for c in seg.chunks] == [10, 7]
    assert not [r for r in caplog.records if r.name.startswith("ragkit") and r.levelno >= logging.WARNING]


def test_generate_warns_once_for_a_long_context_passed_as_one_chunk(tiny, caplog):  # noqa: F811
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0], max_chunk_tokens=64).load()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        g.generate(TINY_Q, ["cells " * 50], mode="full", max_new_tokens=1)
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("ragkit") and r.levelno == logging.WARNING]
    assert len(warned) == 1 and "1 of 1 chunk cut to max_chunk_tokens=64" in warned[0], warned
    assert "(301 tokens)" in warned[0]  # "cells " * 50 stripped: 299 characters, and the separator


def test_the_chat_model_backend_warns_of_chunks_cut_to_less_than_half(caplog):
    """The LangChain chat backend cut chunks to ``max_chunk_words`` without a word, as the local one did."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from ragkit.generators.langchain_chat import LangChainGenerator

    g = LangChainGenerator(FakeListChatModel(responses=["ok"]), max_chunk_words=4)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        msgs = g.messages("q?", ["one two three four five six seven eight nine", "a b c d e", "x y"])
    assert "one two three four\n\na b c d\n\nx y\n\n" in msgs[1].content  # cut as before
    (msg,) = [r.getMessage() for r in caplog.records if r.name.startswith("ragkit")]
    assert "1 of 3 chunks cut to max_chunk_words=4 words, less than half of each: chunk 0 (9 words)" in msg, msg
    assert "(5 words)" in msg and "separate chunks" in msg  # the rest: 9 - 4
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        LangChainGenerator(FakeListChatModel(responses=["ok"])).messages("q?", ["w " * 500])
    assert not caplog.records


def test_the_cut_is_a_warning_once_per_generator_then_info(tiny, caplog):  # noqa: F811
    """A batch of questions over long joined contexts logged the same warning once per question."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from ragkit.generators.langchain_chat import LangChainGenerator
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0], max_chunk_tokens=10).load()
    c = LangChainGenerator(FakeListChatModel(responses=["ok"]), max_chunk_words=2)
    with caplog.at_level(logging.INFO, logger="ragkit"):
        for _ in range(3):
            g.segments(TINY_Q, ["a" * 40])
            c.messages("q?", ["one two three four five"])
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "cut to max_chunk" in r.getMessage()]
    assert [lvl for lvl, _ in said] == [logging.WARNING] * 2 + [logging.INFO] * 4, said
    assert "said once as a warning" in said[0][1] and "said once" not in said[2][1]
    assert LocalGenerator(tiny[0], max_chunk_tokens=10).load().segments(TINY_Q, ["a" * 40]) is not None
    assert caplog.records[-1].levelno == logging.WARNING  # a new generator says it again
