"""BM25's memory and persistence: compact stored arrays (float64 weights, int32 document ids, uint16 counts
sharing one layout), a fit that does not hold several full copies, a load that recomputes nothing and
memory-maps with ``mmap=True``, edits and saves after such a load, saves of the earlier layout."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from conftest import file_mapped

from ragkit._files import folder_checksums
from ragkit.pipelines import PRF
from ragkit.retrievers import BM25, bm25
from ragkit.types import Corpus

WORDS = np.array([f"w{i}x{i * 7919 % 1000}" for i in range(3000)])


def _corpus(n: int = 600, seed: int = 0, start: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    texts = [" ".join(WORDS[rng.zipf(1.3, 40) % len(WORDS)]) for _ in range(n)]
    return Corpus.from_texts(texts, ids=[f"d{i}" for i in range(start, start + n)])


def _queries(corpus: Corpus, n: int = 40) -> list[str]:
    return [t[:30] for t in corpus.texts[:: max(1, len(corpus) // n)][:n]] + ["w17x103 nothing", "zzz"]


def _same_runs(a, b) -> None:  # noqa: ANN001
    assert len(a.doc_ids) == len(b.doc_ids)
    for x, y, sx, sy in zip(a.doc_ids, b.doc_ids, a.scores, b.scores):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(sx, sy)


def _reference_scores(bm: BM25, texts: list[str], queries: list[str]) -> np.ndarray:
    """Dense float64 BM25 scores ``(n_queries, n_docs)`` from the module docs' formulas, one term at a time."""
    p = bm.params
    tok = bm.make_tokenizer()
    vocab = bm.vocab_
    counts = np.zeros((len(texts), len(vocab)))
    for i, doc in enumerate(tok(texts)):
        for t in doc:
            counts[i, vocab[t]] += 1
    n, dl = len(texts), counts.sum(1)
    df = (counts > 0).sum(0)
    if p.variant == "okapi":
        idf = np.log(n - df + 0.5) - np.log(df + 0.5)
        idf = np.where(idf < 0, p.epsilon * idf.mean(), idf)
        scale = p.k1 + 1
    else:
        idf, scale = np.log1p((n - df + 0.5) / (df + 0.5)), 1.0
    norm = p.k1 * (1 - p.b + p.b * dl / dl.mean())[:, None]
    w = np.where(counts > 0, idf * counts * scale / (counts + norm), 0.0)
    q = np.zeros((len(queries), len(vocab)))
    for i, doc in enumerate(tok(queries)):
        for t in doc:
            if t in vocab:
                q[i, vocab[t]] += 1
    return q @ w.T


def test_weights_and_counts_share_one_compact_layout():
    """The counts were a float64 docs x terms matrix and the weights a float64 terms x docs one, each with its
    own index arrays: ~24 bytes per posting.  Now one terms x docs layout: float64 weights, int32 document ids
    shared with uint16 counts (14 bytes per posting)."""
    bm = BM25(k=10).fit(_corpus())
    c, w = bm._counts, bm._wt
    assert c.data.dtype == np.uint16 and w.data.dtype == np.float64
    assert w.indices.dtype == np.int32 and np.shares_memory(w.indices, c.indices)
    assert np.shares_memory(w.indptr, c.indptr)
    nnz = int(bm.doc_freqs().sum())
    assert c.nnz == w.nnz == nnz and c.shape == w.shape == (len(bm.vocab_), 600)
    held = c.data.nbytes + c.indices.nbytes + w.data.nbytes
    assert held == 14 * nnz
    # the docs x terms counts are still there on demand (as Sharded's shared idf reads them)
    tf = bm.tf_
    assert tf.shape == (600, len(bm.vocab_)) and tf.has_sorted_indices
    np.testing.assert_array_equal(np.bincount(tf.indices, minlength=tf.shape[1]), bm.doc_freqs())
    np.testing.assert_array_equal(np.asarray(tf.sum(axis=1)).ravel(), bm.doc_lengths())


def test_a_count_above_uint16_is_kept_whole():
    texts = ["apple " * 70_000 + "pear", "apple pear pear", "kiwi"]
    bm = BM25(k=3, variant="okapi").fit(Corpus.from_texts(texts))
    assert bm._counts.data.dtype == np.int32 and bm.tf_.toarray().max() == 70_000
    np.testing.assert_allclose(bm.score_matrix(["apple pear", "kiwi"]),
                               _reference_scores(bm, texts, ["apple pear", "kiwi"]), rtol=1e-12)


@pytest.mark.parametrize("variant", ["lucene", "okapi"])
def test_rankings_equal_a_float64_reference(variant):
    """Scores equal the formulas' dense float64 values and every ranking is in their order (the weights stay
    float64: float32 weights reordered the top 1000 of 8 of SciFact's 300 test queries)."""
    corpus = _corpus(500, seed=3)
    qs = _queries(corpus)
    bm = BM25(k=500, variant=variant).fit(corpus)
    want = _reference_scores(bm, list(corpus.texts), qs)
    np.testing.assert_allclose(bm.score_matrix(qs), want, rtol=1e-12, atol=1e-12)
    run = bm.search(qs)
    for i, rows in enumerate(run.rankings):
        ref = want[i, rows.rows]
        assert len(rows.rows) == int((want[i] > 0).sum())
        assert (np.diff(ref) <= 1e-12 * np.abs(ref[:-1])).all()  # best first, by the reference's scores


def test_fit_holds_no_stacked_or_transposed_copies(monkeypatch):
    """A fit held every chunk's float64 counts, their stacked copy, the weights, their full-size float64
    temporaries and a transposed copy: ~57 bytes per posting at its peak (traced), 28 of them transient.  Now
    the chunks are placed into the terms x docs arrays one by one and weighed in blocks: 25 (the vocabulary's
    and the tokenizer cache's Python objects weigh ~4 per posting on this small corpus), 6 transient."""
    monkeypatch.setattr(bm25, "COUNT_CHUNK_CHARS", 40_000)  # (keeps the tokens' Python objects small)
    monkeypatch.setattr(bm25, "_WEIGH_BLOCK", 1 << 14)
    corpus = _corpus(6000, seed=5)
    BM25(k=10).fit(corpus)  # (the tokenizer, the stemmer)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        bm = BM25(k=10).fit(corpus)
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    nnz = int(bm.doc_freqs().sum())
    assert peak - base < 32 * nnz and peak - kept < 12 * nnz, ((peak - base) / nnz, (peak - kept) / nnz)
    monkeypatch.setattr(bm25, "COUNT_CHUNK_CHARS", 10**9)
    monkeypatch.setattr(bm25, "_WEIGH_BLOCK", 1 << 30)
    whole = BM25(k=10).fit(corpus)  # (one chunk: its vocabulary's order differs)
    same = whole._wt[[whole.vocab_[t] for t in bm.terms()]]
    np.testing.assert_array_equal(bm._wt.indptr, same.indptr)
    np.testing.assert_array_equal(bm._wt.indices, same.indices)
    np.testing.assert_array_equal(bm._wt.data, same.data)  # the same float64 weights, to the bit


@pytest.mark.parametrize("variant", ["lucene", "okapi"])
def test_load_recomputes_nothing_and_maps_with_mmap(tmp_path, monkeypatch, variant):
    """A load recomputed every weight (and an ``np.unique`` over all postings), ~70% of a fit's cost, and
    ``mmap=True`` was ignored.  Now the weights, counts, lengths and idf are read as saved, memory-mapped with
    ``mmap=True``."""
    corpus = _corpus()
    qs = _queries(corpus)
    bm = BM25(k=50, variant=variant).fit(corpus)
    bm.save(tmp_path / "bm")
    want = bm.search(qs)

    def no(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("load recomputed the weights")

    monkeypatch.setattr(BM25, "_weigh", no)
    for mm in (False, True):
        got = BM25.load(tmp_path / "bm", mmap=mm)
        _same_runs(got.search(qs), want)
        np.testing.assert_array_equal(got._wt.data, bm._wt.data)
        arrays = (got._wt.data, got._counts.data, got._counts.indices, got._counts.indptr, got._dl, got.idf_)
        assert [file_mapped(a) for a in arrays] == [mm] * len(arrays)
        assert np.shares_memory(got._wt.indices, got._counts.indices)


def test_edits_after_an_mmap_load_and_a_save_over_its_own_folder(tmp_path):
    """add / remove after a memory-mapped load (new arrays in memory, the files untouched), and saves into the
    folder the index maps: the save is written beside it and swapped in, so the maps stay valid."""
    old, new = _corpus(400, seed=1), _corpus(200, seed=2, start=400)
    qs = _queries(old) + _queries(new)
    BM25(k=30).fit(old).save(tmp_path / "bm")
    bm = BM25.load(tmp_path / "bm", mmap=True)
    before = bm.search(qs)
    bm.save(tmp_path / "bm")  # unchanged, over its own mapped files
    _same_runs(bm.search(qs), before)
    _same_runs(BM25.load(tmp_path / "bm", mmap=True).search(qs), before)

    twin = BM25(k=30).fit(old)  # the same edits in memory
    bm.add(new)
    twin.add(new)
    assert not file_mapped(bm._wt.data)
    _same_runs(bm.search(qs), twin.search(qs))
    union = BM25(k=30).fit(old.concat(new))  # (its vocabulary's order differs: scores to the last bits)
    for a, b in zip(bm.search(qs).rankings, union.search(qs).rankings):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    bm.save(tmp_path / "bm")
    again = BM25.load(tmp_path / "bm", mmap=True)
    _same_runs(again.search(qs), twin.search(qs))

    gone = [f"d{i}" for i in range(0, 600, 3)]
    again.remove(gone)
    twin.remove(gone)
    _same_runs(again.search(qs), twin.search(qs))
    assert again.terms() == twin.terms() and len(again.vocab_) < len(union.vocab_)
    again.save(tmp_path / "bm")  # over the folder it still maps
    _same_runs(BM25.load(tmp_path / "bm").search(qs), twin.search(qs))


def _as_earlier_layout(folder, bm: BM25) -> None:  # noqa: ANN001
    """Rewrite a save as the code before this layout wrote it: docs x terms float32 counts
    (``tf_data``, ``tf_indices``, ``tf_indptr``), no weights, lengths, idf or ``weights.json``."""
    tf = bm.tf_
    for name in ("weights", "doc_lengths", "idf", "tf_data", "tf_indices", "tf_indptr"):
        (folder / f"{name}.npy").unlink()
    (folder / "weights.json").unlink()
    np.save(folder / "tf_data.npy", tf.data.astype(np.float32))
    np.save(folder / "tf_indices.npy", tf.indices)
    np.save(folder / "tf_indptr.npy", tf.indptr)
    (folder / "checksums.json").unlink()
    (folder / "checksums.json").write_text(json.dumps(folder_checksums(folder)))


@pytest.mark.parametrize("collection", [False, True])
def test_saves_of_the_earlier_layout_still_load(tmp_path, collection):
    corpus = _corpus()
    qs = _queries(corpus)
    bm = BM25(k=40, variant="okapi").fit(corpus)
    if collection:  # (a shard of Sharded: idf and average length of a whole collection)
        bm.set_collection(bm.idf_ * 1.5 + 0.1, 9.5)
    want = bm.search(qs)
    bm.save(tmp_path / "bm")
    _as_earlier_layout(tmp_path / "bm", bm)
    for mm in (False, True):
        got = BM25.load(tmp_path / "bm", mmap=mm)
        _same_runs(got.search(qs), want)
        np.testing.assert_array_equal(got._wt.data, bm._wt.data)
        assert (got.collection_ is not None) == collection
    if not collection:  # it grows as the index it was saved from does
        got.add(_corpus(50, seed=9, start=600))
        _same_runs(got.search(qs), bm.add(_corpus(50, seed=9, start=600)).search(qs))


def test_matches_of_zero_weight_come_from_those_terms_only():
    """okapi's idf is 0 for a term in half the documents: its matches score 0 and are still returned.  They
    were found by a second product over a ones-copy of every posting (and an ``np.unique`` over all postings
    on each weighing); now only the postings of the terms whose idf is <= 0."""
    texts = ["red apple", "red pear", "green kiwi", "blue fig"]
    bm = BM25(k=4, variant="okapi", stemmer="none").fit(Corpus.from_texts(texts))
    assert bm._hits is not None and bm._hits.nnz == 2  # red's two postings (was all 8)
    run = bm.search(["red", "red kiwi", "fig"])
    assert run.doc_ids[0].tolist() == ["0", "1"] and run.scores[0].tolist() == [0.0, 0.0]
    assert run.doc_ids[1].tolist() == ["2", "0", "1"]
    np.testing.assert_allclose(bm.score_matrix(["red", "red kiwi", "fig"]),
                               _reference_scores(bm, texts, ["red", "red kiwi", "fig"]), rtol=1e-12)
    assert BM25(k=4, stemmer="none").fit(Corpus.from_texts(texts))._hits is None  # lucene's idf is > 0


def test_an_add_to_a_large_index_places_its_postings_in_blocks(monkeypatch):
    """Adding 5 documents to an index placed every existing posting at once: int64 positions, a repeat and
    an arange as long as the index, 23 bytes per posting at the peak of ``_terms_by_docs`` (the index holds
    14).  The postings are now placed in blocks of ~``_WEIGH_BLOCK``: the new arrays (6 per posting) and a
    block's temporaries; the result is the same, to the bit, as a fit on the union."""
    monkeypatch.setattr(bm25, "_WEIGH_BLOCK", 1 << 12)
    corpus, more = _corpus(3000, seed=2), _corpus(5, seed=3, start=3000)
    bm = BM25(k=10).fit(corpus)
    nnz = bm._counts.nnz
    place = bm25._terms_by_docs
    peaks = []

    def traced(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        tracemalloc.start()
        try:
            out = place(*args, **kwargs)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        return out

    monkeypatch.setattr(bm25, "_terms_by_docs", traced)
    bm.add(more)
    assert peaks and peaks[0] < 12 * nnz, peaks[0] / nnz
    whole = BM25(k=10).fit(corpus.concat(more))
    assert bm.terms() == whole.terms()
    for a, b in ((bm._counts, whole._counts), (bm._wt, whole._wt)):
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("damage", ["big id", "negative id", "nan weights"])
def test_corrupt_postings_are_refused_even_mapped_and_unverified(tmp_path, mmap, damage):
    """A memory-mapped load with verify=False read document ids unchecked: a search then crashed the
    interpreter in scipy's product (a large id: segfault; a negative one: abort), and NaN weights emptied every
    ranking, mapped or not.  Both are refused when the files' checksums were not verified."""
    from ragkit.errors import ArtifactError
    from ragkit.operator import Operator

    BM25(k=10).fit(_corpus(80)).save(tmp_path / "b")
    name = "weights" if damage == "nan weights" else "tf_indices"
    a = np.load(tmp_path / "b" / f"{name}.npy")
    a[len(a) // 2] = {"big id": 50_000_000, "negative id": -7, "nan weights": np.nan}[damage]
    np.save(tmp_path / "b" / f"{name}.npy", a)
    # (NaN weights: the message says what is wrong with the weights, not the ids, which are sound)
    what = (r"weights\.npy: a value nan at posting \d+ \(1 of [\d,]+ not finite" if damage == "nan weights"
            else "corrupt BM25 arrays: document ids")
    with pytest.raises(ArtifactError, match=what):
        Operator.load(tmp_path / "b", mmap=mmap, verify=False)
    with pytest.raises(ArtifactError, match="checksum"):  # verified: the checksums refuse it first
        Operator.load(tmp_path / "b", mmap=mmap)


def test_a_pipeline_load_whose_manifest_was_verified_skips_the_bm25_scan(tmp_path):
    """Pipeline.load(mmap=True) verified the manifest's checksums, then loaded each step with verify=False, so
    a mapped BM25 read all its ids and weights again (Operator.load of the same step did not); unverified, the
    scan still refuses a corrupt file."""
    from ragkit.errors import ArtifactError
    from ragkit.pipelines import Pipeline

    Pipeline([BM25(k=10)]).fit(_corpus(80)).save(tmp_path / "p")
    assert Pipeline.load(tmp_path / "p", mmap=True).steps[0]._verified
    assert not Pipeline.load(tmp_path / "p", mmap=True, verify=False).steps[0]._verified
    (ids,) = (tmp_path / "p" / "ops").glob("*/tf_indices.npy")
    a = np.load(ids)
    a[len(a) // 2] = -7
    np.save(ids, a)
    with pytest.raises(ArtifactError, match="corrupt BM25 arrays: document ids"):
        Pipeline.load(tmp_path / "p", mmap=True, verify=False)
    with pytest.raises(ArtifactError, match="checksum"):
        Pipeline.load(tmp_path / "p", mmap=True)


def test_fit_joins_titles_and_texts_a_chunk_at_a_time(monkeypatch):
    """A fit on titles + texts built ``Corpus.full_texts``, a list of every joined text held for the whole fit
    (the corpus's characters again: ~1.5 GB at 1M documents; a 200k-document fit peaked at +930 MB, now +650).
    Now the texts are joined as their chunk is tokenised, and the index is the same."""
    monkeypatch.setattr(bm25, "COUNT_CHUNK_CHARS", 40_000)
    base = _corpus(3000, seed=9)
    filler = " " + "w0x0 " * 400  # long texts of few postings: the joined texts outweigh the index
    corpus = Corpus(ids=base.ids, texts=[t + filler for t in base.texts.tolist()],
                    titles=[f"title {i % 7}" for i in range(len(base))])
    chars = sum(map(len, corpus.full_texts))
    BM25(k=10).fit(corpus)  # (the tokenizer, the stemmer)
    for what in (BM25(k=10), PRF()):
        tracemalloc.start()
        try:
            what.fit(corpus)
            kept, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak - kept < 0.6 * chars, (type(what).__name__, (peak - kept) / chars)  # (joined at once: 1.4)
    with monkeypatch.context() as m:
        m.setattr(BM25, "_texts", lambda self, c: c.full_texts)  # (the texts joined at once)
        joined = BM25(k=10).fit(corpus)
    bm = BM25(k=10).fit(corpus)
    assert bm.vocab_ == joined.vocab_
    np.testing.assert_array_equal(bm._wt.data, joined._wt.data)
    np.testing.assert_array_equal(bm._wt.indices, joined._wt.indices)


def test_the_full_texts_view_reads_as_the_list():
    c = Corpus(ids=["a", "b", "c"], texts=["x y", "z", ""], titles=["T", "", "U"])
    view = c.full_texts_view
    assert list(view) == c.full_texts == ["T x y", "z", "U "]
    assert [view[i] for i in range(-3, 3)] == c.full_texts * 2 and view[1:] == c.full_texts[1:]
    assert view.lengths().tolist() == [5, 1, 2] and len(view) == 3
    assert all(type(t) is str for t in view) and type(view[1]) is str
