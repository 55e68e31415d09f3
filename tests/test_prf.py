"""PRF is Anserini's RM3 (``Rm3Reranker`` + ``FeatureVector``): expansion weights checked against
hand-computed fractions and against a plain-Python transcription of the Java, never against
the code under test.  Each of the differences the old implementation had (whole-document
term distributions, no term filter, clipped feedback scores, query weights over the known
terms only) has a case of its own."""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from ragkit.pipelines import PRF
from ragkit.retrievers import BM25
from ragkit.retrievers.bm25 import Tokenizer
from ragkit.types import Corpus, Ranking, State


def _weights(prf: PRF, state: State, which: str = "expansion_weights") -> list[dict[str, float]]:
    """A weight matrix of ``prf`` as one ``{term: weight}`` per query."""
    m = getattr(prf, which)(state).tocsr()
    terms = sorted(prf.vocab_, key=prf.vocab_.get)
    return [{terms[j]: float(v) for j, v in zip(m.indices[m.indptr[i]:m.indptr[i + 1]],
                                                 m.data[m.indptr[i]:m.indptr[i + 1]]) if v != 0}
            for i in range(m.shape[0])]


def _state(query: str, rows: list[int], scores: list[float]) -> State:
    return State([query], rankings=[Ranking(np.array(rows), np.array(scores, np.float32))])


def _close(got: dict[str, float], want: dict[str, Fraction]) -> None:
    assert set(got) == set(want), (sorted(got), sorted(want))
    for t, w in want.items():
        assert got[t] == pytest.approx(float(w), rel=1e-6, abs=1e-9), t


# ---------------------------------------------------------------------- worked example, by hand
FRUIT = Corpus.from_texts([
    "apple apple apple banana banana cherry common common common common",   # d0
    "banana banana date date date elder common",                           # d1
    "common fig", "common grape", "common lemon", "mango", "nut", "olive",  # common: df 5 of 8
])


def test_relevance_model_without_rankings_expands_nothing():
    """Without rankings there are no feedback documents: an empty relevance model, so the expansion
    weights are the query model's share (it raised "'NoneType' object is not iterable")."""
    prf = PRF(fb_docs=2, fb_terms=2, original_query_weight=0.5, max_df=0.5, stemmer="none").fit(FRUIT)
    bare = State(["apple kiwi", "date"])
    assert prf.relevance_model(bare).shape == (2, len(prf.vocab_)) and prf.relevance_model(bare).nnz == 0
    assert _weights(prf, bare) == [{"apple": 0.25}, {"date": 0.5}]
    assert prf(bare).values == {}  # and the call still leaves such a state alone


def test_worked_example_by_hand():
    """fb_docs 2, fb_terms 2, weight 0.5, max_df 0.5 ('common', in 5 of 8 documents, is dropped):

    d0 (score 3): apple 3, banana 2, cherry 1 -> top 2: apple 3/5, banana 2/5
    d1 (score 1): date 3, banana 2, elder 1   -> top 2: date 3/5, banana 2/5
    rm: apple 9/5, banana 8/5, date 3/5 -> top 2, L1: apple 9/17, banana 8/17
    query "apple kiwi" (kiwi not in the corpus): q = apple 1/2, kiwi 1/2
    q': apple 1/4 + 9/34 = 35/68, banana 8/34 = 16/68 (kiwi 1/4 has no corpus term)."""
    prf = PRF(fb_docs=2, fb_terms=2, original_query_weight=0.5, max_df=0.5, stemmer="none").fit(FRUIT)
    s = _state("apple kiwi", [0, 1, 5], [3.0, 1.0, 0.5])
    _close(_weights(prf, s, "relevance_model")[0], {"apple": Fraction(9, 17), "banana": Fraction(8, 17)})
    _close(_weights(prf, s)[0], {"apple": Fraction(35, 68), "banana": Fraction(16, 68)})
    # written out: 1000 repetitions shared 35 : 16
    words = Counter(prf(s).values["lexical_query"][0].split())
    assert words == {"apple": round(1000 * 35 / 51), "banana": round(1000 * 16 / 51)}


def test_each_document_is_pruned_to_fb_terms_before_normalising():
    """fb_terms 1: d0 keeps xx (3 of "xx xx xx yy yy"), d1 keeps zz (3 of "yy yy zz zz zz"); yy,
    the most probable term of the two whole documents together (2/5 + 2/5), never survives a
    document's pruning.  xx and zz tie at 1 * score; the alphabetically first wins (FeatureVector)."""
    corpus = Corpus.from_texts(["xx xx xx yy yy", "yy yy zz zz zz", "other words", "more text"])
    prf = PRF(fb_docs=2, fb_terms=1, max_df=0.5, stemmer="none").fit(corpus)
    _close(_weights(prf, _state("other", [0, 1], [1.0, 1.0]), "relevance_model")[0], {"xx": Fraction(1)})
    _close(_weights(prf, _state("other", [1, 0], [1.0, 1.0]), "relevance_model")[0], {"xx": Fraction(1)})
    # fb_terms 2: xx, yy from d0 (norm 5), zz, yy from d1 (norm 5): xx 3/5, yy 4/5, zz 3/5 -> yy, then xx (tie with zz)
    prf2 = PRF(fb_docs=2, fb_terms=2, max_df=0.5, stemmer="none").fit(corpus)
    _close(_weights(prf2, _state("other", [0, 1], [1.0, 1.0]), "relevance_model")[0],
           {"yy": Fraction(4, 7), "xx": Fraction(3, 7)})


def test_terms_of_1_or_over_20_characters_and_not_a_z_0_9_are_not_added():
    """Anserini's filter: 2 <= length <= 20 and [a-z0-9]+ (pure digits pass; filter_terms=False
    lifts only the character test).  Terms in more than max_df of the documents are not added
    even when they are the most frequent."""
    long_word = "pneumonoultramicroscopic"  # 24 characters
    assert len(long_word) > 20
    corpus = Corpus.from_texts([f"q q q q {long_word} {long_word} {long_word} co-op co-op co-op 2024 2024 ab",
                                "filler words", "more filler", "still more", "and more", "last one"])
    kw = dict(fb_docs=1, fb_terms=10, max_df=0.5, stemmer="none", tokenizer="whitespace")
    s = _state("ab", [0], [2.0])
    # kept: 2024 (2), ab (1): 2024 2/3, ab 1/3
    _close(_weights(PRF(**kw).fit(corpus), s, "relevance_model")[0], {"2024": Fraction(2, 3), "ab": Fraction(1, 3)})
    _close(_weights(PRF(filter_terms=False, **kw).fit(corpus), s, "relevance_model")[0],
           {"co-op": Fraction(3, 6), "2024": Fraction(2, 6), "ab": Fraction(1, 6)})
    # "filler" is in 2 of 6 documents: above max_df 0.25, kept at 0.5
    s2 = _state("words", [1], [1.0])
    assert _weights(PRF(**{**kw, "max_df": 0.25}).fit(corpus), s2, "relevance_model")[0].keys() == {"words"}
    assert _weights(PRF(**kw).fit(corpus), s2, "relevance_model")[0].keys() == {"filler", "words"}


def test_feedback_documents_weigh_by_their_raw_score():
    """d0 (score 2): xx 2/3, yy 1/3; d1 (score -1, as a dense or cross-encoder step can give):
    yy 3/4, zz 1/4.  Raw: xx 4/3, yy 2/3 - 3/4 = -1/12, zz -1/4 -> top 2 xx, yy; L1 17/12:
    xx 16/17, yy -1/17.  Clipped at 0 (the old behaviour, kept as doc_weight="clipped"): xx 2/3, yy 1/3."""
    corpus = Corpus.from_texts(["xx xx yy", "yy yy yy zz", "other words", "more text"])
    kw = dict(fb_docs=2, fb_terms=2, max_df=0.5, stemmer="none")
    s = _state("other", [0, 1], [2.0, -1.0])
    raw = PRF(**kw).fit(corpus)
    _close(_weights(raw, s, "relevance_model")[0], {"xx": Fraction(16, 17), "yy": Fraction(-1, 17)})
    _close(_weights(PRF(doc_weight="clipped", **kw).fit(corpus), s, "relevance_model")[0],
           {"xx": Fraction(2, 3), "yy": Fraction(1, 3)})
    # scale does not matter (the relevance model is L1-normalised), the raw scores' ratio does
    _close(_weights(raw, _state("other", [0, 1], [20.0, 10.0]), "relevance_model")[0],
           _weights(raw, _state("other", [0, 1], [2.0, 1.0]), "relevance_model")[0])
    assert _weights(raw, _state("other", [0, 1], [2.0, 1.0]), "relevance_model")[0] != \
        _weights(raw, _state("other", [0, 1], [1.0, 2.0]), "relevance_model")[0]
    # a weight below 0 cannot be written as repetitions: yy is left out of the text
    assert set(raw(s).values["lexical_query"][0].split()) == {"other", "xx"}


def test_query_weights_count_every_analysed_token():
    """Anserini's query vector is over all analysed query tokens: with 'kiwi' unknown to the corpus
    'apple' weighs 1/2 of the query part, not all of it."""
    prf = PRF(fb_docs=2, fb_terms=2, max_df=0.5, stemmer="none").fit(FRUIT)
    s = _state("apple kiwi apple", [0, 1], [3.0, 1.0])
    _close(_weights(prf, s, "query_model")[0], {"apple": Fraction(2, 3)})
    _close(_weights(PRF(original_query_weight=1.0, stemmer="none").fit(FRUIT), s)[0], {"apple": Fraction(2, 3)})


# ---------------------------------------------------------------------- against a transcription of the Java
def _anserini_rm3(doc_tokens, query_tokens, rows, scores, fb_docs, fb_terms, weight, max_df, filter_terms=True):
    """Rm3Reranker.rerank's feedback query, term by term, in exact fractions."""
    n = len(doc_tokens)
    df = Counter(t for d in doc_tokens for t in set(d))

    def created_feature_vector(tokens):
        f = {}
        for t, tf in Counter(tokens).items():
            if len(t) < 2 or len(t) > 20:
                continue
            if filter_terms and not re.fullmatch("[a-z0-9]+", t):
                continue
            if np.float32(df[t]) / np.float32(n) > np.float32(max_df):
                continue
            f[t] = Fraction(tf)
        return f

    def prune_to_size(f, k):  # value descending, then feature ascending
        return dict(sorted(f.items(), key=lambda kv: (-kv[1], kv[0]))[:k])

    qfv = {t: Fraction(c, len(query_tokens)) for t, c in Counter(query_tokens).items()}
    vectors = [prune_to_size(created_feature_vector(doc_tokens[r]), fb_terms) for r in rows[:fb_docs]]
    norms = [sum(v.values()) for v in vectors]
    vocab = set().union(*vectors) if vectors else set()
    rm = {t: sum((v.get(t, 0) / nv * Fraction(float(s)) for v, nv, s in zip(vectors, norms, scores) if nv > 0),
                 Fraction(0)) for t in vocab}
    rm = prune_to_size(rm, fb_terms)
    l1 = sum(abs(v) for v in rm.values())
    rm = {t: v / l1 for t, v in rm.items()} if l1 else {}
    w = Fraction(weight)
    return {t: w * qfv.get(t, 0) + (1 - w) * rm.get(t, 0) for t in set(qfv) | set(rm)}


@pytest.mark.parametrize("fb_docs, fb_terms, weight, max_df",
                         [(10, 10, 0.5, 0.1), (3, 5, 0.3, 0.5), (20, 25, 0.75, 0.05)])
def test_matches_a_transcription_of_anserini_on_bm25_rankings(slice_data, fb_docs, fb_terms, weight, max_df):
    corpus, queries, _, _ = slice_data
    bm25 = BM25(k=20).fit(corpus)
    s = bm25(State.of(queries))
    prf = PRF(fb_docs=fb_docs, fb_terms=fb_terms, original_query_weight=weight, max_df=max_df).fit(corpus)
    got = _weights(prf, s)
    analyse = Tokenizer("lucene", "porter", "alnum")
    docs, qs = analyse(corpus.full_texts), analyse(list(queries.texts))
    known = set(prf.vocab_)
    for i, r in enumerate(s.rankings):
        want = _anserini_rm3(docs, qs[i], r.rows.tolist(), r.scores.tolist(), fb_docs, fb_terms, weight, max_df)
        _close(got[i], {t: v for t, v in want.items() if t in known and v != 0})


def test_old_parameter_name_is_still_read():
    assert PRF(orig_weight=0.3).params.original_query_weight == 0.3
    from ragkit.pipelines import Pipeline

    pipe = Pipeline.from_yaml("pipeline: [{prf: {orig_weight: 0.3}}]")
    assert pipe.steps[0].params.original_query_weight == 0.3 and "original_query_weight: 0.3" in pipe.to_yaml()


def test_rows_past_its_corpus_and_an_add_it_cannot_follow_are_named():
    """A row outside the fitted corpus was a bare IndexError; after add() on the pipeline's BM25 steps
    the error advised editing every retriever alike, which PRF (no add) cannot follow."""
    from ragkit.errors import DataError
    from ragkit.pipelines import Pipeline

    prf = PRF(fb_docs=2, stemmer="none").fit(FRUIT)
    with pytest.raises(DataError, match=r"prf: candidate row 99 is outside the fitted corpus \(8 documents\)"):
        prf(_state("apple", [0, 99], [2.0, 1.0]))
    pipe = Pipeline([BM25(k=5), PRF(fb_docs=2), BM25(k=5)]).fit(FRUIT)
    more = Corpus.from_texts(["apple pie"], ids=["new"])
    pipe.steps[0].add(more)
    pipe.steps[2].add(more)
    with pytest.raises(DataError, match=r"fit the pipeline again \(pipeline\[1\]\.prf cannot be edited: it has "
                                        r"no add\)"):
        pipe.search(["apple"])


# ---------------------------------------------------------------------- the expansion as term counts
def _text_path(monkeypatch) -> None:
    """Make every BM25 tokenise the expanded text (the only path before the counts were passed)."""
    monkeypatch.setattr(BM25, "expansion_matrix", lambda self, state, texts: None)


def _same_runs(a, b) -> None:
    assert a.query_ids == b.query_ids and a.values["lexical_query"] == b.values["lexical_query"]
    for ra, rb in zip(a.rankings, b.rankings):
        np.testing.assert_array_equal(ra.rows, rb.rows)
        np.testing.assert_array_equal(ra.scores, rb.scores)


@pytest.mark.parametrize("example", ["rm3", "prf_loop"])
def test_bm25_after_prf_ranks_as_the_tokenised_text_does(slice_data, monkeypatch, example):
    """``bm25 | prf | bm25`` and the RM3 loop example: the bm25 after prf builds its query matrix from PRF's
    term counts (it is used, on every query) and the rankings and scores equal those of tokenising the text."""
    from ragkit.pipelines import Pipeline

    corpus, queries, _, _ = slice_data
    pipe = Pipeline.from_yaml(Path(__file__).resolve().parents[1] / "examples" / f"{example}.yaml").fit(corpus)
    used = []
    real = BM25.expansion_matrix

    def spy(self, state, texts):
        q = real(self, state, texts)
        used.append(q is not None)
        if q is not None:
            assert (q != self.query_matrix(list(texts))).nnz == 0
        return q

    monkeypatch.setattr(BM25, "expansion_matrix", spy)
    fast = pipe.search(queries)
    assert len(used) >= 2 and not used[0] and all(used[1:])  # (the first bm25, or loop round, has no expansion)
    _text_path(monkeypatch)
    _same_runs(fast, pipe.search(queries))


SPELLINGS = Corpus.from_texts([
    "Apple apples applied the Cafés of İstanbul; Fermat's theorem",
    "running runners ran quickly, café CAFÉ and U.S. policy",
    "the apple pie and the pies of 2020 with naïve bayes",
    "quick quickly quicker quickest running", "naïve Bayes classifiers", "pie charts and apple trees",
    "東京 タワー and tokyo", "zebra", "yak", "xylophone",
])


@pytest.mark.parametrize("tokenizer, stopwords, stemmer", [
    ("alnum", "lucene", "porter"), ("unicode", "lucene", "english"), ("whitespace", "none", "none"),
    ("unicode", "none", "porter")])
def test_counts_are_the_tokenised_text_for_every_analysis(tokenizer, stopwords, stemmer):
    """For every analysis, the query matrix from PRF's counts equals ``query_matrix`` of its text, and each query's
    ``values["lexical_counts"]`` is the Counter of its text's terms; a query PRF leaves unexpanded (no
    term of the corpus) is tokenised as it is, next to expanded ones."""
    kw = {"tokenizer": tokenizer, "stopwords": stopwords, "stemmer": stemmer}
    bm = BM25(k=4, **kw).fit(SPELLINGS)
    prf = PRF(fb_docs=3, fb_terms=4, max_df=1.0, **kw).fit(SPELLINGS)
    s = bm(State(["apple pies running", "café naïve", "東京 İstanbul", "nothing matches qqq"]))
    s.rankings[1] = Ranking.empty()  # (no feedback documents: the query's own terms, weighted)
    out = prf(s)
    texts = out.texts(lexical=True)
    assert texts[3] == "nothing matches qqq" and texts[1] != "café naïve"  # (no term of the corpus: as it was)
    q = bm.expansion_matrix(out, texts)
    assert q is not None and (q != bm.query_matrix(texts)).nnz == 0 and q.has_sorted_indices
    tok = Tokenizer(stopwords, stemmer, tokenizer)
    counts = out.values["lexical_counts"]
    assert [c.to_dict() for c in counts] == [dict(Counter(tok([t])[0])) if c.batch.expanded[c.row] else {}
                                             for t, c in zip(texts, counts)]
    assert repr(counts[0]).startswith("QueryCounts({")


def test_counts_are_not_read_unless_they_are_exactly_the_texts_searched():
    """The counts are read only for the texts PRF wrote, for a BM25 of PRF's analysis that indexes every expansion
    term; otherwise (a rewritten text, another analysis, an index of another corpus or with a term removed,
    entries of two PRF calls or of another kind) the text is tokenised.  A sub-batch (a loop's active queries)
    still reads them."""
    bm = BM25(k=4).fit(SPELLINGS)
    prf = PRF(fb_docs=3, fb_terms=4, max_df=1.0).fit(SPELLINGS)
    out = prf(bm(State(["apple pies running", "quick naïve bayes", "pie trees"])))
    texts = out.texts(lexical=True)
    assert bm.expansion_matrix(out, texts) is not None
    sub = out.subset([2, 0])
    q = bm.expansion_matrix(sub, sub.texts(lexical=True))
    assert q is not None and (q != bm.query_matrix(sub.texts(lexical=True))).nnz == 0
    rewritten = out.copy()
    rewritten.values["lexical_query"][1] = "zebra"
    assert bm.expansion_matrix(rewritten, rewritten.texts(lexical=True)) is None
    assert bm.expansion_matrix(out, [*texts[:2], texts[2] + " yak"]) is None
    assert BM25(k=4, stemmer="none").fit(SPELLINGS).expansion_matrix(out, texts) is None

    class Folding(BM25):  # (counts texts its own way)
        def make_tokenizer(self) -> Tokenizer:
            return Tokenizer("none", "none", "alnum")

    assert Folding(k=4).fit(SPELLINGS).expansion_matrix(out, texts) is None
    other = prf(bm(State(["zebra yak", "xylophone"])))
    mixed = out.copy()
    mixed.values["lexical_counts"][0] = other.values["lexical_counts"][0]
    assert bm.expansion_matrix(mixed, texts) is None
    mixed.values["lexical_counts"][0] = None
    assert bm.expansion_matrix(mixed, texts) is None
    # an index edited after PRF: grown, the counts still hold; a term gone, the text is tokenised
    grown = BM25(k=4).fit(SPELLINGS).add(Corpus.from_texts(["apple walrus"], ids=["new"]))
    q = grown.expansion_matrix(out, texts)
    assert q is not None and (q != grown.query_matrix(texts)).nnz == 0
    used = {t for c in out.values["lexical_counts"] for t in c.to_dict()}
    col = min(bm.vocab_[t] for t in used if bm.doc_freqs()[bm.vocab_[t]] == 1)  # a term of one document
    holder = int(bm.tf_[:, col].nonzero()[0][0])
    assert BM25(k=4).fit(SPELLINGS.subset([i for i in range(len(SPELLINGS)) if i != holder])).expansion_matrix(
        out, texts) is None
    shrunk = BM25(k=4).fit(SPELLINGS).remove(SPELLINGS.ids[holder])
    assert shrunk.expansion_matrix(out, texts) is None
