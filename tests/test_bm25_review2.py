"""BM25 and PRF, second review: lucene's N and avgdl leave out documents with no indexed token (as Lucene's
docCount does), PRF drops Porter's empty stem, a bare string is refused where a list of texts is expected,
and PRF counts its corpus in chunks (as BM25 does) with the same results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from ragkit.errors import DataError, NotFittedError
from ragkit.retrievers import BM25
from ragkit.retrievers.bm25 import Tokenizer
from ragkit.scale import Sharded
from ragkit.types import Corpus

BLANKS = ["", "The ...", "the of and", "!!"]  # no indexed token (empty, stopwords, punctuation)


def _padded(corpus: Corpus, n_blank: int, every: int = 3) -> Corpus:
    """``corpus`` with ``n_blank`` documents of no indexed token, one after every ``every`` of its documents."""
    ids, texts = [], []
    blank = 0
    for i, (d, t) in enumerate(zip(corpus.ids.tolist(), corpus.full_texts)):
        ids.append(d)
        texts.append(t)
        if i % every == every - 1 and blank < n_blank:
            ids.append(f"blank{blank}")
            texts.append(BLANKS[blank % len(BLANKS)])
            blank += 1
    ids += [f"blank{i}" for i in range(blank, n_blank)]
    texts += [BLANKS[i % len(BLANKS)] for i in range(blank, n_blank)]
    return Corpus(ids=ids, texts=texts)


def _plain(corpus: Corpus) -> Corpus:
    """``corpus`` with its titles folded into the texts (so that ``_padded``'s corpus indexes the same text)."""
    return Corpus(ids=corpus.ids.tolist(), texts=list(corpus.full_texts))


# ---------------------------------------------------------------- 1. lucene: N and avgdl of documents with a token
def test_lucene_n_and_avgdl_count_only_documents_with_a_token():
    """Lucene's idf uses docCount (documents that hold the field) and avgdl = sumTotalTermFreq / docCount; the
    lucene variant counted empty and all-stopword documents in both."""
    corpus = Corpus.from_texts(["b b c", "b", "", "the of", "c d"])
    bm = BM25(k1=1.2, b=0.75, stemmer="none").fit(corpus)
    n, avgdl = 3, (3 + 1 + 2) / 3  # three documents hold a token; the other two are not counted
    idf = lambda df: np.log(1 + (n - df + 0.5) / (df + 0.5))  # noqa: E731
    w = lambda tf, dl: tf / (tf + 1.2 * (1 - 0.75 + 0.75 * dl / avgdl))  # noqa: E731
    want = [idf(2) * w(2, 3) + idf(2) * w(1, 3), idf(2) * w(1, 1), 0.0, 0.0, idf(2) * w(1, 2)]
    np.testing.assert_allclose(bm.score_matrix(["b c"])[0], want, rtol=1e-12)
    assert bm.collection_of(bm.doc_lengths()) == (n, avgdl)
    # okapi counts every document, as rank-bm25 does
    ok = BM25(variant="okapi", k1=1.5, b=0.75, stemmer="none", stopwords="none")
    ok.fit(Corpus.from_texts(["b b c", "b", "", "c d"]))
    ref = BM25Okapi([["b", "b", "c"], ["b"], [], ["c", "d"]])
    np.testing.assert_allclose(ok.score_matrix(["b c", "d"]), [ref.get_scores(["b", "c"]), ref.get_scores(["d"])],
                               rtol=1e-12)
    assert ok.collection_of(ok.doc_lengths()) == (4, 6 / 4)


def test_lucene_blank_documents_change_no_other_score(slice_data):
    """300 blank documents added to 300 SciFact documents halved avgdl and changed the top 20 of 299/300 queries;
    now every document scores as without them."""
    corpus, queries, _, _ = slice_data
    plain = _plain(corpus)
    padded = _padded(plain, len(plain))
    a, b = BM25(k=20).fit(plain), BM25(k=20).fit(padded)
    assert int((b.doc_lengths() == 0).sum()) == len(plain)
    np.testing.assert_allclose(b.idf_, a.idf_, rtol=1e-15)
    real = np.flatnonzero(~np.char.startswith(padded.ids.astype(str), "blank"))
    np.testing.assert_allclose(b.score_matrix(queries.texts)[:, real], a.score_matrix(queries.texts), rtol=1e-12)
    for x, y in zip(a.search(queries).doc_ids, b.search(queries).doc_ids):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("variant", ["lucene", "okapi"])
def test_sharded_add_and_remove_with_blank_documents_equal_one_fresh_index(slice_data, variant):
    """Shards (one of them all blank) share the whole corpus's N and avgdl as one index counts them; add and
    remove of blank and other documents equal a fresh fit of the result."""
    corpus, queries, _, _ = slice_data
    padded = _padded(_plain(corpus), 60, every=2)
    padded = padded.concat(Corpus(ids=[f"tail{i}" for i in range(40)], texts=[BLANKS[i % 4] for i in range(40)]))
    one = BM25(k=15, variant=variant).fit(padded)
    sharded = Sharded(retriever={"bm25": {"k": 15, "variant": variant}}, n_shards=4, k=15, backend="local")
    sharded.fit(padded)  # (the last shard holds only blank documents)
    for x, y in zip(sharded.search(queries).rankings, one.search(queries).rankings):
        np.testing.assert_array_equal(x.rows, y.rows)
        np.testing.assert_allclose(x.scores, y.scores, rtol=1e-12)

    half = np.arange(len(padded)) < len(padded) // 2
    inc = BM25(k=15, variant=variant).fit(padded.subset(np.flatnonzero(half)))
    inc.add(padded.subset(np.flatnonzero(~half)))
    np.testing.assert_allclose(inc.score_matrix(queries.texts), one.score_matrix(queries.texts), rtol=1e-12)
    drop = [i for i in padded.ids.tolist() if i.startswith("blank")][::2] + corpus.ids[::5].tolist()
    inc.remove(drop)
    rest = padded.subset(np.flatnonzero(~np.isin(padded.ids, drop)))
    fresh = BM25(k=15, variant=variant).fit(rest)
    np.testing.assert_allclose(inc.score_matrix(queries.texts), fresh.score_matrix(queries.texts), rtol=1e-12)
    if variant == "lucene":  # blanks removed or not: the other documents score the same
        base = BM25(k=15).fit(_plain(corpus).subset(np.flatnonzero(~np.isin(corpus.ids, drop))))
        real = np.flatnonzero([not i.startswith(("blank", "tail")) for i in rest.ids.tolist()])
        np.testing.assert_allclose(fresh.score_matrix(queries.texts)[:, real], base.score_matrix(queries.texts),
                                   rtol=1e-12)


def test_a_lucene_save_from_before_is_reweighed_only_where_it_has_blank_documents(slice_data, tmp_path):
    """A lucene save whose weights.json predates the fix (no ``n_docs`` in its key) holds weights that counted
    blank documents: it is reweighed on load when it has one, and loaded as saved when it has none."""
    corpus, queries, _, _ = slice_data
    for name, c in [("padded", _padded(_plain(corpus), 30)), ("plain", _plain(corpus))]:
        bm = BM25(k=10).fit(c)
        folder = tmp_path / name
        bm.save(folder)
        meta = json.loads((folder / "weights.json").read_text())
        assert meta["weights_of"].pop("n_docs") == "with_tokens"
        (folder / "weights.json").write_text(json.dumps(meta))
        w = np.load(folder / "weights.npy")
        np.save(folder / "weights.npy", w * 2)  # (marks the saved weights: twice the scores where loaded as saved)
        got = BM25.load(folder, verify=False).score_matrix(queries.texts)
        want = bm.score_matrix(queries.texts)
        np.testing.assert_allclose(got, want if name == "padded" else 2 * want, rtol=1e-12)


# ---------------------------------------------------------------- 2. PRF: no empty stem
def test_prf_drops_porter_empty_stem_as_bm25_does():
    """Porter stems the "s" of "Fermat's" and "U.S." to "": PRF kept it as a query term (weight 1/3 of the
    query model of "Fermat's theorem in the U.S. cells"), which BM25 drops; now it is no term."""
    from ragkit.pipelines import PRF
    from ragkit.types import State

    corpus = Corpus.from_texts(["Fermat's last theorem", "cells in the U.S. divide", "a theorem about cells",
                                "s s s"])
    prf = PRF(fb_docs=2, fb_terms=5, max_df=1.0).fit(corpus)
    assert "" not in prf.vocab_ and set(prf.vocab_) == set(BM25().fit(corpus).vocab_)
    state = State(["Fermat's theorem in the U.S. cells"])
    qm = prf.query_model(state).toarray()[0]
    terms = sorted(prf.vocab_, key=prf.vocab_.__getitem__)
    assert {t: qm[j] for j, t in enumerate(terms) if qm[j]} == {"fermat": 0.25, "theorem": 0.25, "u": 0.25,
                                                                "cell": 0.25}
    assert prf._tokenize(["Fermat's U.S."])[0] == [["fermat", "u"]]
    bm = BM25(k=4).fit(corpus)
    words = prf(bm(state)).values["lexical_query"][0].split()
    assert "s" not in words and set(words) == {"cells", "theorem", "fermat", "u", "divide", "last"}
    assert "s" not in prf.surface_.tolist()


# ---------------------------------------------------------------- 3. one str where a list of texts is expected
def test_one_string_is_refused_where_a_list_of_texts_is_expected():
    """score_matrix("red") scored the queries "r", "e", "d" (a 3 x n_docs matrix of zeros), query_matrix and
    Tokenizer split a str into its characters; now each refuses it as search's State does, and an unfitted
    query_matrix is NotFittedError (was AttributeError: no vocab_)."""
    bm = BM25(k=2).fit(Corpus.from_texts(["red apple", "green pear", "red car"]))
    for call, name in [(bm.score_matrix, "bm25.score_matrix"), (bm.query_matrix, "bm25.query_matrix"),
                       (Tokenizer(), "Tokenizer"), (Tokenizer().surfaces, "Tokenizer.surfaces")]:
        with pytest.raises(DataError, match=rf"^{name}: expected a list of texts, got one str \('red car'\); wrap it "
                                            "in a list$"):
            call("red car")
        with pytest.raises(DataError, match="got one bytes"):
            call(b"red car")
    assert bm.score_matrix(["red car"]).shape == (1, 3) and bm.query_matrix(("red", "car")).shape[0] == 2
    assert Tokenizer()(["red cars"]) == [["red", "car"]]
    for call in (BM25().query_matrix, BM25().score_matrix):
        with pytest.raises(NotFittedError, match=r"BM25 \('bm25'\) is not fitted yet"):
            call(["red"])


# ---------------------------------------------------------------- 4. PRF counts as BM25 does
def _words_corpus(n: int, seed: int) -> Corpus:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}x{i * 7919 % 1000}" for i in range(3000)] + ["cells", "cell", "celled", "The", "U.S."])
    return Corpus.from_texts([" ".join(words[rng.zipf(1.3, 40) % len(words)]) for _ in range(n)],
                             ids=[f"d{i}" for i in range(n)])


def test_prf_counts_in_chunks_with_the_same_results_at_bm25s_peak_memory(monkeypatch):
    """PRF tokenised the whole corpus at once (its tokens as Python lists), counted with per-token Python loops
    and kept float64 counts: ~1.8x BM25's fit time and peak memory.  Now it counts as BM25 does, in chunks, into
    uint16 counts: the same counts, vocabulary (alphabetical) and surface words as counting everything at once,
    at no more than BM25's traced peak."""
    import tracemalloc
    from collections import Counter

    from ragkit.pipelines import PRF
    from ragkit.retrievers import bm25

    corpus = _words_corpus(4000, seed=3)
    monkeypatch.setattr(bm25, "COUNT_CHUNK_CHARS", 40_000)  # (many chunks, each adding terms)
    PRF().fit(corpus), BM25().fit(corpus)  # (the tokenizer, the stemmer)
    peaks = {}
    for name, make in [("bm25", BM25), ("prf", PRF)]:
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            op = make().fit(corpus)
            peaks[name] = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    assert peaks["prf"] < peaks["bm25"], peaks
    prf = op
    assert prf.tf_.dtype == np.uint16 and prf.tf_.indices.dtype == np.int32 and prf.tf_.has_sorted_indices
    # a reference: every text's terms counted by hand, columns in alphabetical order
    tok = Tokenizer()
    terms = sorted({t for d in tok(corpus.full_texts) for t in d})
    assert list(prf.vocab_) == terms and [prf.vocab_[t] for t in terms] == list(range(len(terms)))
    want = np.zeros((len(corpus), len(terms)))
    for i, d in enumerate(tok(corpus.full_texts)):
        for t, c in Counter(d).items():
            want[i, prf.vocab_[t]] = c
    np.testing.assert_array_equal(prf.tf_.toarray(), want)
    assert dict(zip(terms, prf.surface_.tolist()))["cell"] == "cell"  # shortest word of a stem
    monkeypatch.setattr(bm25, "COUNT_CHUNK_CHARS", 10**9)
    whole = PRF().fit(corpus)
    assert whole.vocab_ == prf.vocab_ and whole.surface_.tolist() == prf.surface_.tolist()
    for a in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(whole.tf_, a), getattr(prf.tf_, a))
    np.testing.assert_array_equal(whole.expandable_, prf.expandable_)
    np.testing.assert_array_equal(whole.df_, prf.df_)


def test_a_fitted_bm25_pickles_and_deep_copies_with_the_same_results() -> None:
    """PyStemmer's stemmer does not pickle: a fitted BM25 (the LangChain retriever's default) raised
    TypeError on pickle.dumps and copy.deepcopy; the tokenizer now rebuilds it from its name."""
    import copy
    import pickle

    from ragkit.types import Corpus

    docs = Corpus.from_texts(["cells were dividing rapidly", "the dividing line of vitamins", "stemming words"])
    op = BM25(k=2).fit(docs)
    want = op.search(["dividing cells"]).rankings[0]
    for other in (pickle.loads(pickle.dumps(op)), copy.deepcopy(op)):
        got = other.search(["dividing cells"]).rankings[0]
        assert list(got.rows) == list(want.rows) and np.allclose(got.scores, want.scores)
        assert other.make_tokenizer()(["dividing"]) == [["divid"]]
