"""Review s51 of the dense index: a verified load does not CRC32 the index files again, exact b1 search of a few
queries by a byte lookup table, VectorIndex.search's columns at most the slots, DenseParams.oversample's
description, one NaN/inf scan naming the first bad row."""

import json

import numpy as np
import pytest
from conftest import HashedEncoder

from ragkit.encoders import register_encoder
from ragkit.operator import Operator
from ragkit.retrievers import Dense, _index_files
from ragkit.types import Corpus

register_encoder("dense-s51-hashed", HashedEncoder("dense-s51-hashed-v1", 32), replace=True)


def _corpus(n: int) -> Corpus:
    return Corpus([f"d{i}" for i in range(n)], [f"text {i} word{i % 7} term{i % 11}" for i in range(n)])


def _counting_crc(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    orig = _index_files._crc

    def crc(path):  # noqa: ANN001, ANN202
        calls.append(str(path).rsplit("/", 1)[-1])
        return orig(path)

    monkeypatch.setattr(_index_files, "_crc", crc)
    return calls


def test_verified_load_reads_no_index_crc(tmp_path, monkeypatch) -> None:
    """Operator.load's SHA-256 sums cover the index files: the index's own CRC32s are not recomputed (each read
    every file a second time); verify=False keeps them (README: an index still checks its own CRC32)."""
    d = Dense(model="dense-s51-hashed", k=5, dtype="i8", rescore=True).fit(_corpus(300))
    d.save(tmp_path / "m")
    calls = _counting_crc(monkeypatch)
    for mmap in (False, True):
        Operator.load(tmp_path / "m", mmap=mmap)
        assert calls == [], calls
    Operator.load(tmp_path / "m", mmap=True, verify=False)
    assert sorted(calls) == sorted(f"index.{n}.npy" for n in ("alive", "codes", "floats", "i8_min", "i8_step"))


def test_verify_false_still_refuses_a_corrupt_index_file(tmp_path) -> None:
    from ragkit.errors import ArtifactError

    d = Dense(model="dense-s51-hashed", k=5, dtype="i8").fit(_corpus(50))
    d.save(tmp_path / "m")
    p = tmp_path / "m" / "index.codes.npy"
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="CRC32"):
        Operator.load(tmp_path / "m", verify=False)


def test_save_takes_crc_while_writing(tmp_path, monkeypatch) -> None:
    """The arrays a save writes are checksummed as they are written (no read-back), to the same CRC32."""
    d = Dense(model="dense-s51-hashed", k=5, dtype="i8", rescore=True).fit(_corpus(300))
    calls = _counting_crc(monkeypatch)
    d.index_.save(tmp_path / "ix")
    assert calls == ["index.floats.npy"]  # (the scratch file mapped, copied whole: read back)
    files = json.loads((tmp_path / "ix" / "index.json").read_text())["files"]
    monkeypatch.undo()
    for name, info in files.items():
        assert info["crc32"] == _index_files._crc(tmp_path / "ix" / name), name


def _b1_reference(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The float query against the ±1 sign bits, divided by sqrt(ndim), in float64."""
    signs = np.where(x > 0, 1.0, -1.0)
    return (q.astype(np.float64) @ signs.T) / np.sqrt(x.shape[1])


@pytest.mark.parametrize("ndim", [37, 64])
def test_b1_exact_few_queries_by_lookup_table(ndim, monkeypatch) -> None:
    """Exact b1 search of a batch of at most B1_LUT_QUERIES queries scores by a byte lookup table (the bits are not
    unpacked to a float32 block of the whole corpus, ~200 ms a batch at 100k x 384), to the same scores within 1e-5,
    equal codes tied and ranked by lower slot; a larger batch, as before."""
    from ragkit.retrievers import _index_search
    from ragkit.retrievers._index import VectorIndex

    rng = np.random.default_rng(3)
    x = rng.standard_normal((700, ndim)).astype(np.float32)
    x[[400, 650]] = x[50]  # equal codes
    ix = VectorIndex(dtype="b1", search="exact", metric="ip").build(x)
    unpacked: list[tuple[int, ...]] = []
    real = np.unpackbits

    def counting(a, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        unpacked.append(np.shape(a))
        return real(a, *args, **kwargs)

    monkeypatch.setattr(np, "unpackbits", counting)
    for nq in (1, 3, _index_search.B1_LUT_QUERIES, _index_search.B1_LUT_QUERIES + 1):
        q = rng.standard_normal((nq, ndim)).astype(np.float32)
        q[0] = np.where(x[50] > 0, 1.0, -1.0)  # ranks 50, 400, 650 first, tied
        unpacked.clear()
        slots, scores = ix.search(q, 700)
        assert (unpacked == []) == (nq <= _index_search.B1_LUT_QUERIES), (nq, unpacked)
        ref = _b1_reference(x, q)
        np.testing.assert_allclose(scores, np.take_along_axis(ref, slots, axis=1), atol=1e-5)
        assert slots[0, :3].tolist() == [50, 400, 650] and scores[0, 0] == scores[0, 1] == scores[0, 2]
        for r in range(nq):  # (score desc, slot asc) among the exactly equal scores
            same = np.flatnonzero(np.diff(scores[r]) == 0)
            assert (slots[r, same] < slots[r, same + 1]).all()
    mask = np.zeros(700, bool)
    mask[::3] = True
    q = rng.standard_normal((2, ndim)).astype(np.float32)
    slots, scores = ix.search(q, 20, mask=mask)
    ref = np.where(mask, _b1_reference(x, q), -np.inf)
    np.testing.assert_allclose(scores, np.sort(ref, axis=1)[:, ::-1][:, :20], atol=1e-5)
    assert mask[slots].all()


@pytest.mark.parametrize("search", ["exact", "hnsw"])
def test_search_columns_at_most_the_slots(search) -> None:
    """VectorIndex.search answers min(k, n_slots) columns (a k of 10**7 over 10 vectors allocated ~700 MB of
    padding), -1 / -inf where fewer pass; Dense.search_vectors and Dense.search as well, with no clamp of their own."""
    from ragkit.retrievers._index import VectorIndex

    rng = np.random.default_rng(5)
    x = rng.standard_normal((10, 16)).astype(np.float32)
    q = rng.standard_normal((3, 16)).astype(np.float32)
    ix = VectorIndex(dtype="i8", search=search, rescore=True).build(x)
    slots, scores = ix.search(q, 1000)
    assert slots.shape == scores.shape == (3, 10)
    assert sorted(slots[0].tolist()) == list(range(10)) and np.isfinite(scores).all()
    mask = np.zeros(10, bool)
    mask[[2, 7]] = True
    slots, scores = ix.search(q, 1000, mask=mask)
    assert slots.shape == (3, 10) and (slots[:, 2:] == -1).all() and np.isneginf(scores[:, 2:]).all()
    assert ix.search(q, 4)[0].shape == (3, 4)
    ix.remove(np.array([0, 1]))
    slots, _ = ix.search(q, 1000)  # removed slots: padding within n_slots
    assert slots.shape == (3, 10) and (slots[:, 8:] == -1).all()
    empty = VectorIndex(search="exact").build(np.zeros((0, 16), np.float32))
    assert empty.search(q, 5)[0].shape == (3, 0)

    d = Dense(model="dense-s51-hashed", k=5, search=search).fit(_corpus(10))
    rows, scores = d.search_vectors(rng.standard_normal((4, 32)).astype(np.float32), 10**7)
    assert rows.shape == scores.shape == (4, 10)
    run = d.search(["text 3"], k=10**7)
    assert len(run.rankings[0].rows) == 10


def test_oversample_description_says_rescore_uses_it_on_an_exact_index() -> None:
    """DenseParams.oversample said it was unused where search: auto fits an exact index; with rescore it sets the
    shortlist re-scored with the float vectors there too (b1 + rescore ranks otherwise at oversample 1 and 8)."""
    from ragkit.retrievers.dense import DenseParams

    text = DenseParams.model_fields["oversample"].description
    assert "rescore" in text and "an exact index's too" in text
    assert "unused where search: auto fits an exact index, on" not in text
    c = _corpus(600)
    queries = [f"word{i} term{i}" for i in range(20)]
    runs = [Dense(model="dense-s51-hashed", k=10, dtype="b1", rescore=True, oversample=o).fit(c) for o in (1, 8)]
    assert all(r.index_.backend == "numpy" for r in runs)
    a, b = (r.search(queries) for r in runs)
    assert any(not np.array_equal(x.rows, y.rows) for x, y in zip(a.rankings, b.rankings))


def test_nonfinite_vectors_name_the_first_row_once() -> None:
    """build / add / build_chunks name the first vector holding NaN or inf and how many (one blocked scan,
    :func:`~ragkit.retrievers._quantize.nonfinite_rows`); the error (NonFiniteVectors, a DataError) carries them, so
    Dense names the document without scanning the vectors again."""
    from ragkit.errors import DataError
    from ragkit.retrievers._index import NonFiniteVectors, VectorIndex
    from ragkit.retrievers._quantize import BLOCK, nonfinite_rows

    x = np.random.default_rng(0).standard_normal((BLOCK + 40, 8)).astype(np.float32)
    assert nonfinite_rows(x) is None
    x[[BLOCK + 3, BLOCK + 9]] = np.nan
    x[BLOCK + 20, 5] = np.inf
    assert nonfinite_rows(x, count=True) == (BLOCK + 3, 3)
    assert nonfinite_rows(x[:, 0]) == (BLOCK + 3, 2)  # (1-D: elements)
    with pytest.raises(NonFiniteVectors, match=rf"build: the vectors contain NaN or infinite values \(3 of the "
                                               rf"{BLOCK + 40}, the first at row {BLOCK + 3}\)") as e:
        VectorIndex(search="exact").build(x)
    assert (e.value.row, e.value.count, e.value.n) == (BLOCK + 3, 3, BLOCK + 40) and isinstance(e.value, DataError)
    ix = VectorIndex(search="exact").build(x[:10])
    with pytest.raises(NonFiniteVectors, match=r"add: the vectors contain NaN or infinite values \(3 of the 40, "
                                               r"the first at row 3\)"):
        ix.add(x[BLOCK:])
    chunks = lambda: ((a, min(len(x), a + 1000), x[a:a + 1000].copy()) for a in range(0, len(x), 1000))  # noqa: E731
    with pytest.raises(NonFiniteVectors, match=rf"the first at row {BLOCK + 3} of {BLOCK + 40}\)") as e:
        VectorIndex(dtype="i8", search="exact").build_chunks(len(x), 8, chunks)
    assert (e.value.row, e.value.count) == (BLOCK + 3, None)

    class NaNRows(HashedEncoder):
        def encode(self, texts, **kw):  # noqa: ANN001, ANN003, ANN201
            out = super().encode(texts, **kw)
            for i, t in enumerate(texts):
                if t.startswith("bad"):
                    out[i] = np.nan
            return out

    register_encoder("dense-s51-nan", NaNRows("dense-s51-nan-v1", 16), replace=True)
    d = Dense(model="dense-s51-nan", k=3).fit(_corpus(20))
    more = Corpus(["n0", "n1", "n2", "n3"], ["fine", "bad one", "fine too", "bad two"])
    with pytest.raises(DataError, match=r"returned 2 of the 4 document vectors with NaN or infinite values \(the "
                                        r"first at row 1, document 'n1'\)"):
        d.add(more)


def test_dbnorm_dense_verified_load_reads_no_index_crc(tmp_path, monkeypatch) -> None:
    """dbnorm_dense's index, as dense's: a verified load does not CRC32 its files again; verify=False does."""
    from ragkit.filters import DBNormDense
    from ragkit.types import TrainSet

    train = TrainSet({"q1": "text word1", "q2": "term3 text"}, {"q1": {"d1": 1}, "q2": {"d3": 1}})
    op = DBNormDense(model="dense-s51-hashed", k=5).fit(_corpus(120), train)
    op.save(tmp_path / "b")
    calls = _counting_crc(monkeypatch)
    back = Operator.load(tmp_path / "b")
    assert calls == [], calls
    assert back.search(["text word1"]).doc_ids[0].tolist() == op.search(["text word1"]).doc_ids[0].tolist()
    Operator.load(tmp_path / "b", verify=False)
    assert calls, "verify=False keeps the index's own CRC32s"


def test_scores_are_cosines_for_an_encoder_that_does_not_normalise() -> None:
    """Dense.scores took the query vectors as given: with a dot-product model (vectors of any length, kept raw
    since 94a4551) and metric cos it returned q . unit(d), not the cosines a search ranks by."""
    register_encoder("dense-s51-raw", HashedEncoder("dense-s51-raw-v1", 32, unit=False), replace=True)
    corpus = _corpus(40)
    d = Dense(model="dense-s51-raw", k=5).fit(corpus)
    q = HashedEncoder("dense-s51-raw-v1", 32, unit=False).encode(["text 3 word3", "term5 text"])
    s = d.scores(q)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(s, qn @ d.document_vectors().T, atol=1e-5)
    rows, top = d.search_vectors(q, 5)
    np.testing.assert_allclose(np.take_along_axis(s, rows, 1), top, atol=1e-5)
    ip = Dense(model="dense-s51-raw", k=5, metric="ip").fit(corpus)
    np.testing.assert_allclose(ip.scores(q), q @ ip.document_vectors().T, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["i8", "b1", "f16", "f32"])
def test_a_build_scans_each_row_for_nan_once(dtype, monkeypatch) -> None:
    """VectorIndex.build scans the vectors for NaN / inf once: through build_chunks (float64 vectors, exact
    search) each chunk was scanned again, twice for i8 (its two passes): 3 scans of every row for i8, 2 for
    b1 / f16.  build_chunks itself scans each row once (i8: in its first pass; an HNSW graph: not again in
    the build of the gathered rows).  A NaN row is still refused, named."""
    from ragkit.retrievers import _index
    from ragkit.retrievers._index import NonFiniteVectors, VectorIndex
    from ragkit.retrievers._quantize import BLOCK

    scanned: list[int] = []
    orig = _index.nonfinite_rows

    def counting(a, **kw):  # noqa: ANN001, ANN003, ANN202
        scanned.append(len(a))
        return orig(a, **kw)

    monkeypatch.setattr(_index, "nonfinite_rows", counting)
    n = 2 * BLOCK + 7
    x = np.random.default_rng(1).standard_normal((n, 8))  # float64: build codes it a block at a time
    ref = VectorIndex(dtype=dtype, search="exact").build(x)
    assert sum(scanned) == n
    scanned.clear()
    chunks = lambda: ((a, min(n, a + 1000), x[a:a + 1000].astype(np.float32)) for a in range(0, n, 1000))  # noqa: E731
    ix = VectorIndex(dtype=dtype, search="exact").build_chunks(n, 8, chunks)
    assert sum(scanned) == n and np.array_equal(ix.codes, ref.codes)
    scanned.clear()
    few = lambda: ((a, a + 1000, x[a:a + 1000].astype(np.float32)) for a in range(0, 3000, 1000))  # noqa: E731
    VectorIndex(dtype=dtype, search="hnsw").build_chunks(3000, 8, few)
    assert sum(scanned) == 3000
    x[BLOCK + 5, 2] = np.nan
    for build in (lambda: VectorIndex(dtype=dtype, search="exact").build(x),
                  lambda: VectorIndex(dtype=dtype, search="exact").build_chunks(n, 8, chunks)):
        with pytest.raises(NonFiniteVectors, match=rf"the first at row {BLOCK + 5}\b") as e:
            build()
        assert e.value.row == BLOCK + 5
    x[2500, 1] = np.inf
    with pytest.raises(NonFiniteVectors, match=r"the first at row 2500 of 3000\)"):
        VectorIndex(dtype=dtype, search="hnsw").build_chunks(3000, 8, few)
