"""Generation review s52: the Cache-Craft costing of a stored variant, blank questions, the tokenizer identity,
the prompt's segments.

Fast tests use hand-built variants or the 4-layer ``tiny`` checkpoints of ``test_cachecraft`` (no SmolLM2 load).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_cachecraft import TINY_CHUNKS, TINY_Q, tiny  # noqa: F401

from ragkit.caches import ChunkVariant


def _var(**kw) -> ChunkVariant:
    base = dict(keys=torch.zeros(2, 1, 4, 2), values=torch.zeros(2, 1, 4, 2), start=10, prefix_ids=("A",),
                prefix_lens=(5,), inter=np.ones((2, 1), np.float32), intra=np.ones(2, np.float32), cci=0.6,
                sys_id="S")
    base.update(kw)
    return ChunkVariant(**base)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- one CFO (was: two that disagreed)
def test_variant_cfo_is_the_cfo_the_generator_uses():
    """Old code: ``ChunkVariant.cfo`` ignored the system prompt and exactness (0.00 for an inexact variant and for an
    exact one of another system prompt, where the generator's CFO was 0.20 and 0.60)."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(alpha=1.0)
    cases = [(_var(exact=False), ["A"], "S"), (_var(), ["A"], "S2"), (_var(), ["A"], "S"), (_var(), ["B"], "S"),
             (_var(prefix_ids=(), prefix_lens=(), inter=np.zeros((2, 0), np.float32)), ["B"], "S")]
    for v, new_prefix, sys_id in cases:
        assert v.cfo(new_prefix, 1.0, sys_id=sys_id) == pytest.approx(g._need(v, new_prefix, [5], sys_id)[0])
    inexact, other_sys = cases[0][0], cases[1][0]
    assert inexact.cfo(["A"]) > 0  # its own system prompt by default: its rows are approximate, so not free
    assert other_sys.cfo(["A"], sys_id="S2") > 0 and other_sys.cfo(["A"]) == 0.0


def test_with_alpha_an_inexact_variant_after_other_chunks_is_costed_by_eq12_not_the_captured_alone_proxy():
    """Old code: with ``alpha`` set an inexact variant captured after other chunks got the "captured alone" proxy
    ``alpha * (CCI - 0.5) * 2`` (0.2 at CCI 0.6) where an exact variant of another context got Eq. 12
    (``alpha * CCI * (1 - beta')``, 0.3 here): two scales, so the approximate rows won the variant choice.
    ALGORITHMS.md §5.3 keeps the proxy for variants captured alone."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(alpha=1.0)
    inexact = _var(exact=False)
    other = _var(prefix_ids=("B", "C"), prefix_lens=(5, 5), inter=np.ones((2, 2), np.float32))  # beta 0.5 after (B)
    assert g._need(inexact, ["A"], [5], "S") == (pytest.approx(0.6), False)  # beta' = 0: its rows are approximate
    assert g._need(inexact, ["B"], [5], "S")[0] == pytest.approx(0.6)
    assert g._need(other, ["B"], [5], "S")[0] == pytest.approx(0.3)
    assert g._need(other, ["B"], [5], "S")[0] < g._need(inexact, ["B"], [5], "S")[0]
    alone = _var(prefix_ids=(), prefix_lens=(), inter=np.zeros((2, 0), np.float32))
    assert g._need(alone, ["B"], [5], "S")[0] == pytest.approx(0.2)  # the proxy, for an exact variant captured alone
    # alpha unset: ragkit's budget weights, as before
    g0 = LocalGenerator()
    assert g0._need(inexact, ["B"], [5], "S")[0] == pytest.approx(0.2)
    assert g0._need(other, ["B"], [5], "S")[0] == pytest.approx(0.2 * (1 - 0.5 * 1.0))


def test_with_alpha_the_captured_alone_proxy_is_for_exact_variants_of_the_same_system_prompt_only():
    """Old code: with ``alpha`` set the "captured alone" proxy ``alpha * (CCI - 0.5) * 2`` was tried before "kept
    nothing of its context", so an inexact variant captured alone cost 0.2 and beat an exact variant captured after
    (B, C) (0.3 after (B)) and, after (A), an inexact variant captured after (A) (0.6); an exact variant captured
    alone under another system prompt cost 0.2 too.  ALGORITHMS.md §5.3's proxy is for chunks prefilled alone
    after the same system prompt (exact); rows approximate themselves or of another system prompt keep nothing of
    their context: ``alpha * CCI``."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(alpha=1.0)
    empty = dict(prefix_ids=(), prefix_lens=(), inter=np.zeros((2, 0), np.float32))
    alone_inexact = _var(exact=False, **empty)
    exact_alone = _var(**empty)
    other_bc = _var(prefix_ids=("B", "C"), prefix_lens=(5, 5), inter=np.ones((2, 2), np.float32))
    inexact_after_a = _var(exact=False)
    assert g._need(alone_inexact, ["B"], [5], "S")[0] == pytest.approx(0.6)
    assert g._need(alone_inexact, ["B"], [5], "S")[0] >= g._need(other_bc, ["B"], [5], "S")[0]
    assert g._need(inexact_after_a, ["A"], [5], "S")[0] <= g._need(alone_inexact, ["A"], [5], "S")[0]
    assert g._need(exact_alone, ["B"], [5], "S2")[0] >= 0.3
    assert g._need(exact_alone, ["B"], [5], "S2") == (pytest.approx(0.6), False)
    assert g._need(exact_alone, ["B"], [5], "S") == (pytest.approx(0.2), False)  # the proxy stays for these
    assert alone_inexact.cfo(["B"], 1.0) == pytest.approx(0.6)  # ChunkVariant.cfo is the same function
    # alpha unset: unchanged (2 CCI - 1 for an inexact variant, the budget weight for an exact one)
    g0 = LocalGenerator()
    assert g0._need(alone_inexact, ["B"], [5], "S")[0] == pytest.approx(0.2)
    assert g0._need(exact_alone, ["B"], [5], "S2")[0] == pytest.approx(0.2)
    assert g0._need(exact_alone, ["B"], [5], "S")[0] == pytest.approx(0.2)
    assert g0._need(inexact_after_a, ["A"], [5], "S")[0] == pytest.approx(0.2)


def test_variant_cfo_with_alpha_unset_counts_the_new_prefix_tokens_and_fix_overhead_is_public():
    """Old code: ``ChunkVariant.cfo`` passed no token counts to :func:`fix_overhead`, so with ``alpha=None`` kappa (the
    share of the new prefix's tokens that were in the old prefix) fell back to 1.0: 0.0 where the generator's budget
    weight was 0.16; and ``fix_overhead``, which the README names, was not in ``caches.chunk_kv.__all__``."""
    import ragkit.caches.chunk_kv as chunk_kv
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    assert "fix_overhead" in chunk_kv.__all__
    v = _var()
    need = LocalGenerator()._need(v, ["A", "B"], [5, 20], "S")[0]
    assert need == pytest.approx(0.2 * (1 - 1.0 * 0.2))  # beta 1, kappa 5 / 25
    assert v.cfo(["A", "B"], None, new_lens=[5, 20]) == pytest.approx(need)
    with pytest.raises(ParamError, match="alpha=None without new_lens; expected new_lens") as e:
        v.cfo(["A", "B"], None)
    assert e.value.path == "new_lens"
    with pytest.raises(ParamError, match="new_lens has 1 entries for 2 chunks in new_prefix; expected one") as e:
        v.cfo(["A", "B"], None, new_lens=[5])
    assert v.cfo(["A", "B"], 1.0, new_lens=[5, 20]) == \
        pytest.approx(LocalGenerator(alpha=1.0)._need(v, ["A", "B"], [5, 20], "S")[0])
    with pytest.raises(ParamError, match="new_prefix holds 1 chunk"):  # (B added: kappa < 1 needs the lengths)
        v.cfo(["A", "B"], 1.0)


# ----------------------------------------------------------------------------- a blank question
#: (the last four: invisible characters only, blank as the encoders read them)
BLANKS = ["", "   ", "\n\t ", "\u3000", "\u200b", "\ufeff", "\x00 ", "\u2063"]


@pytest.mark.parametrize("question", BLANKS)
def test_a_blank_question_is_refused_by_the_engines_before_the_model_runs(question):
    """Old code: ``LocalGenerator(max_chunk_tokens=60).generate("", [A], max_new_tokens=8)`` answered
    'Sailors got scurvy...' (and ``stream``, ``LangChainGenerator.generate`` too), where ``ragkit ask`` and
    RagkitGenerator refuse it."""
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator()  # never loaded: the check comes first
    for call in (lambda: g.generate(question, TINY_CHUNKS, max_new_tokens=4),
                 lambda: list(g.stream(question, TINY_CHUNKS)), lambda: g.generate(question, []),
                 lambda: g.segments(question, TINY_CHUNKS)):
        with pytest.raises(ParamError, match="expected a question, got an empty one") as e:
            call()
        assert e.value.path == "question" and str(e.value).startswith(f"LocalGenerator: question={question!r}")
    assert g.model_ is None
    fake = pytest.importorskip("langchain_core.language_models.fake_chat_models")
    from ragkit.generators.langchain_chat import LangChainGenerator

    lc = LangChainGenerator(fake.FakeListChatModel(responses=["made up"]))
    for call in (lambda: lc.generate(question, TINY_CHUNKS), lambda: list(lc.stream(question, TINY_CHUNKS))):
        with pytest.raises(ParamError, match="expected a question, got an empty one") as e:
            call()
        assert e.value.path == "question" and str(e.value).startswith("LangChainGenerator: ")


def test_the_generate_step_skips_a_blank_question_and_answers_the_others():
    """Old code: the generate step sent a blank query with documents (a dense retriever ranks for it) to the model,
    which answered from the documents alone; refused by the engine now, it is skipped, not raised mid-batch."""
    fake = pytest.importorskip("langchain_core.language_models.fake_chat_models")
    from ragkit.generators import NO_DOCUMENT, NO_QUESTION
    from ragkit.generators.operator import Generate
    from ragkit.types import Corpus, Ranking, State

    corpus = Corpus.from_records([{"_id": "d0", "text": "Scurvy: no vitamin C."}, {"_id": "d1", "text": "Paris."}])
    chat = fake.FakeListChatModel(responses=["C", "D"])
    op = Generate(backend="langchain", top_k=1).with_chat_model(chat)
    op.fit(corpus)
    some = Ranking(np.array([0, 1]), np.array([2.0, 1.0], np.float32))
    none = Ranking(np.zeros(0, np.int64), np.zeros(0, np.float32))
    out = op(State(["", "What causes scurvy?", " \t", "", "\u200b"], rankings=[some, some, some, none, some]))
    assert out.values["answer"] == ["", "C", "", "", ""]
    assert out.values["answer_skipped"] == [NO_QUESTION, None, NO_QUESTION, NO_DOCUMENT, NO_QUESTION]
    assert out.values["prefill"] == [None, None, None, None, None]
    assert chat.i == 1  # the chat model was asked once


INVISIBLE = ["\u200b", "\ufeff", "\x00 ", "\u2063 \u200b"]


@pytest.mark.parametrize("question", INVISIBLE)
def test_a_question_of_invisible_characters_is_blank_everywhere_as_for_the_encoders(question):
    """Old code: the generators, ``ragkit ask`` and RagkitGenerator took ``not question.strip()`` for blank, so a
    zero-width space, a BOM or a NUL passed, where the encoders (README: "empty, whitespace or invisible characters
    only") read them as blank."""
    from typer.testing import CliRunner

    from ragkit.cli import app
    from ragkit.encoders.sentence import blank_texts
    from ragkit.errors import ParamError
    from ragkit.generators._prompt import _check_prompt

    assert blank_texts([question]).tolist() == [True]  # one rule: the encoders'
    with pytest.raises(ParamError, match="expected a question, got an empty one"):
        _check_prompt(question, TINY_CHUNKS)
    _check_prompt("\u200bWhat causes scurvy?", TINY_CHUNKS)  # text beside them: a question
    res = CliRunner().invoke(app, ["ask", "--pipeline", "bm25", "--data", "nowhere", question])
    assert res.exit_code == 2 and "expected a question, got an empty one" in res.output, res.output
    pytest.importorskip("langchain_core")
    from ragkit.integrations.langchain import RagkitGenerator

    with pytest.raises(ParamError, match="expected a question, got an empty one") as e:
        RagkitGenerator(max_new_tokens=4).invoke({"question": question, "documents": []})
    assert e.value.path == "question"


# ----------------------------------------------------------------------------- the tokenizer identity, once
def test_the_tokenizer_identity_is_hashed_once_per_loaded_model(tiny, monkeypatch):  # noqa: F811
    """Old code: every generator's load hashed the whole vocabulary again (json of SmolLM2's 49k tokens + sha256:
    0.30 s of a 0.34 s second load), although the model and tokenizer are loaded once per process."""
    from ragkit.generators import local

    monkeypatch.setattr(local, "_LOADED", {})
    cls = type(local.LocalGenerator(tiny[0]).load().tokenizer_)
    owner = next(c for c in cls.__mro__ if "get_vocab" in vars(c))
    real = vars(owner)["get_vocab"]
    calls: list[object] = []

    def counted(self):  # noqa: ANN001, ANN202
        calls.append(self)
        return real(self)

    monkeypatch.setattr(owner, "get_vocab", counted)
    monkeypatch.setattr(local, "_LOADED", {})  # loaded again, counted from the start
    a = local.LocalGenerator(tiny[0]).load()
    b = local.LocalGenerator(tiny[0], max_chunk_tokens=50).load()
    assert len(calls) == 1
    assert a.tokenizer_id_ == b.tokenizer_id_ and a.tokenizer_id_.startswith(f"{cls.__name__}:")


# ----------------------------------------------------------------------------- the system segment, once
def test_the_system_segment_is_rendered_and_tokenised_once_per_system_prompt(tiny, monkeypatch):  # noqa: F811
    """Old code: every question rendered the chat template and tokenised the system segment again (they depend on
    the system prompt alone).  The segments stay what they were: the first (uncached) call's, and a change of
    ``system_prompt`` gives its own."""
    import pickle

    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0]).load()
    first = g.segments(TINY_Q, TINY_CHUNKS)
    cls = type(g.tokenizer_)
    real = cls.__call__
    texts: list[object] = []

    def counted(self, text, *a, **kw):  # noqa: ANN001, ANN202
        texts.append(text)
        return real(self, text, *a, **kw)

    monkeypatch.setattr(cls, "__call__", counted)
    again = [g.segments(q, TINY_CHUNKS) for q in (TINY_Q, "Where is Paris?", TINY_Q)]
    assert not [t for t in texts if isinstance(t, str) and t.endswith("Documents:\n")]
    assert again[0] == first and again[2] == first and again[1].system == first.system
    assert again[1].chunks == first.chunks and again[1].question != first.question
    fresh = LocalGenerator(tiny[0]).load().segments(TINY_Q, TINY_CHUNKS)
    assert fresh == first
    g.system_prompt = "Answer in one word."
    other = g.segments(TINY_Q, TINY_CHUNKS)
    assert other.system != first.system and other.chunks == first.chunks
    assert other == LocalGenerator(tiny[0], system_prompt="Answer in one word.").load().segments(TINY_Q, TINY_CHUNKS)
    assert pickle.loads(pickle.dumps(g)).segments(TINY_Q, TINY_CHUNKS) == other
    older = g.__getstate__()
    del older["_prompt_parts"]  # (pickled by a ragkit before the memo: set up at unpickling, not per question)
    back = LocalGenerator.__new__(LocalGenerator)
    back.__setstate__(older)
    assert back._prompt_parts == {} and back.load().segments(TINY_Q, TINY_CHUNKS) == other
    n = len(other.system)
    other.system.append(0)  # the caller's copy: the cached ids stay
    assert len(g.segments(TINY_Q, TINY_CHUNKS).system) == n
