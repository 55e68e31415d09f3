"""Review s53 of the dense retriever and its index: parameters replaced after the fit (refused where they describe
the stored index, applied where they are settings), ``search_vectors``' argument checks, exact search after a
removal (contiguous blocks, no gathers), the b1 graph rebuild's memory, an unfiltered HNSW search asked for nearly
every document, and ``check_corpus``' embedding width."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HashedEncoder, assert_same_but_near_ties

from ragkit.encoders import register_encoder
from ragkit.errors import ParamError
from ragkit.retrievers import Dense
from ragkit.types import Corpus

register_encoder("dense-s53-hashed", HashedEncoder("dense-s53-hashed-v1", 24), replace=True)
MODEL = "dense-s53-hashed"


def _corpus(n: int) -> Corpus:
    return Corpus([f"d{i}" for i in range(n)], [f"text {i} word{i % 7} w{i % 11}" for i in range(n)])


# ------------------------------------------------------------------ 1. params replaced after the fit
@pytest.mark.parametrize("change", [dict(dtype="f16"), dict(search="hnsw"), dict(reduce="pca:8"),
                                    dict(rescore=True), dict(metric="ip"), dict(connectivity=32)])
def test_index_state_changed_after_the_fit_is_refused(tmp_path, change):
    """``d.params = d.params.updated(dtype="f16")`` after the fit was accepted: searches read the i8 index, and
    a save wrote a folder that Dense.load refused, saying it was changed after saving."""
    base = dict(search="hnsw") if "connectivity" in change else {}
    d = Dense(model=MODEL, k=5, dtype="i8", **base).fit(_corpus(60))
    before = d.search(["text 3"]).rankings[0].rows.tolist()
    d.params = d.params.updated(**change)
    key = next(iter(change))
    for act in (lambda: d.search(["text 3"]), lambda: d.save(tmp_path / "x"), lambda: d.add(Corpus(["n"], ["new"])),
                lambda: d.search_vectors(np.ones((1, 24), np.float32), 3)):
        with pytest.raises(ParamError, match=rf"dense\.{key}: .*fitted index was built with {key}=") as e:
            act()
        assert e.value.path == f"dense.{key}"
    assert not (tmp_path / "x").exists()
    d.params = d.params.updated(**{**{k: Dense.Params.model_fields[k].default for k in change}, "dtype": "i8"})
    assert d.search(["text 3"]).rankings[0].rows.tolist() == before  # set back: searches as before
    d.save(tmp_path / "y")
    Dense.load(tmp_path / "y")


def test_settings_changed_after_the_fit_reach_the_index(tmp_path):
    """threads / expansion_add changed after the fit never reached the index (usearch kept all cores, new nodes
    the old beam), nor its save."""
    d = Dense(model=MODEL, k=5, search="hnsw").fit(_corpus(200))
    d.params = d.params.updated(threads=1, expansion_add=300, expansion_search=40, reorder=False)
    d.search(["text 3"])
    ix = d.index_
    assert (ix.threads, ix._threads(), ix.expansion_add, ix.expansion_search, ix.reorder) == (1, 1, 300, 40, False)
    assert (ix.usearch.expansion_add, ix.usearch.expansion_search) == (300, 40)
    d.params = d.params.updated(threads=2)
    d.add(Corpus(["n"], ["new words"]))  # an add applies them too
    assert d.index_.threads == 2
    d.params = d.params.updated(threads=-1)
    d.save(tmp_path / "s")
    back = Dense.load(tmp_path / "s")
    assert back.params.threads == -1 and back.index_.threads == 0  # -1: every core, usearch's 0
    assert (back.index_.expansion_add, back.index_.expansion_search) == (300, 40)


# ------------------------------------------------------------------ 2. search_vectors' arguments
@pytest.mark.parametrize("kw, match", [
    (dict(expansion_search=0.5), r"search_vectors\.expansion_search: expected an integer, got 0\.5"),
    (dict(expansion_search=2.5), r"search_vectors\.expansion_search: expected an integer, got 2\.5"),
    (dict(expansion_search=True), r"search_vectors\.expansion_search: expected an integer, got True"),
    (dict(expansion_search=2**31 - 1), r"search_vectors\.expansion_search: expected a value <= 1048576"),
    (dict(oversample=2.5), r"search_vectors\.oversample: expected an integer, got 2\.5"),
    (dict(k=2.7), r"search_vectors\.k: expected a positive integer, got 2\.7"),
    (dict(k="5"), r"search_vectors\.k: expected a positive integer, got '5'"),
    (dict(k=True), r"search_vectors\.k: expected a positive integer, got True"),
])
def test_search_vectors_checks_its_arguments_as_the_run_options(kw, match):
    """``int(expansion_search)`` made 0.5 say "got 0" (naming VectorIndex.search) and accepted 2.5 and True;
    2**31 - 1 passed the 2**20 bound of the option (usearch: 'Out of memory!'); k 2.7 searched for 2, "5" failed
    with a TypeError."""
    d = Dense(model=MODEL, k=5, search="hnsw").fit(_corpus(100))
    q = np.random.default_rng(0).standard_normal((1, 24)).astype(np.float32)
    k = kw.pop("k", 5)
    with pytest.raises(ParamError, match=rf"^dense\.{match}") as e:
        d.search_vectors(q, k, **kw)
    assert e.value.path.startswith("dense.search_vectors.")
    rows, _ = d.search_vectors(q, np.int64(5), expansion_search=np.int64(200))  # numpy integers pass
    assert rows.shape == (1, 5) and d.index_.expansion_search == 64  # (a per-call width: the index's unchanged)
    assert np.array_equal(d.search_vectors(q, 5, expansion_search="200")[0], rows)  # as dense={...} converts it


# ------------------------------------------------------------------ 3. exact search after a removal
class _CountingCodes(np.ndarray):
    """Stored codes that count the gathers (an index array) made of them."""

    gathers = 0

    def __getitem__(self, key):  # noqa: ANN001, ANN204
        if isinstance(key, np.ndarray) or (isinstance(key, tuple) and any(isinstance(a, np.ndarray) for a in key)):
            type(self).gathers += 1
        return super().__getitem__(key)


@pytest.mark.parametrize("dtype", ["f32", "f16", "i8", "b1"])
def test_exact_search_after_a_removal_reads_contiguous_blocks(dtype):
    """One removed document switched every exact search to gathering each block by slot (a copy of the block's
    codes: 100,000 x 384 f32, one query, 1.38x slower); the blocks are read in place and the removed slots'
    scores set to -inf, with the same slots and scores, ties (equal vectors) ranked by lower slot as before."""
    from ragkit.retrievers._index import VectorIndex
    from ragkit.retrievers._quantize import BLOCK

    rng = np.random.default_rng(7)
    n = 2 * BLOCK + 500
    x = rng.standard_normal((n, 16)).astype(np.float32)
    x[BLOCK - 300: BLOCK + 300] = x[:600]  # equal vectors, across a block's end too
    ix = VectorIndex(dtype=dtype, search="exact").build(x)
    ix.remove(np.r_[3, 17, BLOCK - 299, BLOCK + 5, 2 * BLOCK + 1, np.arange(n - 50, n)])
    everything = np.ones(n, bool)  # (a mask passing every slot: the gathered path, as before)
    for q in (x[[0, 5, 17, 600]], rng.standard_normal((12, 16)).astype(np.float32)):  # b1: lookup table / bits
        for k in (10, 700, n - 40, n):
            want = ix.search(q, k, mask=everything)
            _CountingCodes.gathers = 0
            ix.codes = ix.codes.view(_CountingCodes)
            try:
                got = ix.search(q, k)
            finally:
                ix.codes = ix.codes.view(np.ndarray)
            assert _CountingCodes.gathers == 0
            assert_same_but_near_ties(got, want)  # (the same scores, to float32 rounding: see its docstring)
            assert (got[0] >= 0).sum(axis=1).max() == min(k, ix.n_alive)


# ------------------------------------------------------------------ 4. a b1 graph's rebuild
def test_b1_graph_rebuild_unpacks_its_codes_in_place():
    """A b1 graph rebuilt from its live codes (a remove past GRAPH_DEAD_FRACTION) peaked at ~44x the codes:
    ``unpackbits(codes).astype(float32) * 2 - 1`` made a uint8 and three float32 temporaries of the ±1 matrix
    that insertion_order clusters; it is unpacked a block at a time into the one matrix, in place (the same
    points, so the same order and graph)."""
    from conftest import traced_peak

    from ragkit.retrievers._index import VectorIndex
    from ragkit.retrievers._locality import insertion_order

    rng = np.random.default_rng(3)
    n, d = 25_000, 128
    ix = VectorIndex(dtype="b1", search="hnsw", threads=1).build(rng.standard_normal((n, d)).astype(np.float32))
    live = np.flatnonzero(np.arange(n) % 3 != 0)
    codes = ix._live_codes(live)
    _, peak = traced_peak(lambda: ix.remove(np.arange(0, n, 3)))  # a third: the graph is rebuilt
    assert len(ix.usearch) == len(live)
    matrix = len(live) * d * 4  # the ±1 float32 matrix of the live codes (32x them)
    assert peak < 1.7 * matrix, (peak / matrix, peak / codes.nbytes)  # (measured 1.44x; old 2.06x)
    old = np.unpackbits(codes, axis=1)[:, :d].astype(np.float32) * 2 - 1
    points = ix._code_points(codes)
    np.testing.assert_array_equal(points, old)
    np.testing.assert_array_equal(insertion_order(points), insertion_order(old))
    got, _ = ix.search(points[:5], 1)
    assert np.array_equal(got[:, 0], live[:5])


# ------------------------------------------------------------------ 5. an unfiltered graph search for k near n
def test_unfiltered_hnsw_search_returns_k_when_k_exist():
    """usearch's beam can miss nodes when k is near the corpus size (k 2,999 of 3,000: 2,994 found); an unfiltered
    search took that as the answer, where a filtered one answers its short queries exactly."""
    from ragkit.retrievers._index import VectorIndex

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    q = rng.standard_normal((20, 32)).astype(np.float32)
    ix = VectorIndex(dtype="f32", search="hnsw", threads=8).build(x)  # (8 threads: a graph whose beam misses some)
    assert ((ix._hnsw(q, 2999)[1] >= 0).sum(axis=1) < 2999).any()  # the graph alone: short
    slots, scores = ix.search(q, 2999)
    assert (slots >= 0).all() and np.isfinite(scores).all()
    assert all(len(set(r)) == 2999 for r in slots.tolist())
    assert (np.diff(scores, axis=1) <= 0).all()
    one, _ = ix.search(q[:1], 2999)  # one query: usearch cuts its matches to the hits found
    assert (one >= 0).all()


# ------------------------------------------------------------------ 6. check_corpus' width, a b1 graph's exact answers
def test_check_corpus_reads_a_registered_encoders_width_first():
    """check_corpus read KNOWN_DIMS before the encoder registered under the name (the opposite of _known_width,
    which a load reads): a 32-d encoder registered as all-MiniLM-L6-v2 passed reduce: pca:64 (384 known)."""
    from ragkit.encoders.custom import registered_encoder, unregister_encoder

    name = "all-MiniLM-L6-v2"
    before = registered_encoder(name)
    register_encoder(name, HashedEncoder("dense-s53-minilm-32", 32), replace=True)
    try:
        with pytest.raises(ParamError, match=r"^dense\.reduce: 'pca:64' asks for 64 dimensions but .* have 32") as e:
            Dense(model=name, reduce="pca:64").check_corpus(_corpus(100))
        assert e.value.path == "dense.reduce"
        Dense(model=name, reduce="pca:16").check_corpus(_corpus(100))
    finally:
        unregister_encoder(name)
        if before is not None:
            register_encoder(name, before)


def test_a_b1_graphs_exact_answers_are_not_scored_twice(monkeypatch):
    """A b1 graph's request for every live slot, or a filter passing few, is answered by the exact scan, whose
    scores are already the float query against the bits; the second stage fetched and scored those candidates
    again.  The answers are a b1 exact index's, to the bit."""
    from ragkit.retrievers._index import VectorIndex

    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 32)).astype(np.float32)
    q = rng.standard_normal((6, 32)).astype(np.float32)
    graph = VectorIndex(dtype="b1", search="hnsw", threads=1).build(x)
    flat = VectorIndex(dtype="b1", search="exact").build(x)
    calls = []
    real = VectorIndex._second_stage

    def counted(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(kw.get("use_floats"))
        return real(self, *a, **kw)

    monkeypatch.setattr(VectorIndex, "_second_stage", counted)
    few = np.zeros(300, bool)
    few[::7] = True
    for k, mask in ((80, None), (10, few)):  # 80 * oversample 4 >= 300 live: every slot; a filter of 43
        got, want = graph.search(q, k, mask=mask), flat.search(q, k, mask=mask)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    assert calls == []
    graph.search(q, 5)  # (a graph search: re-ranked by the float query)
    assert calls == [False]


# ------------------------------------------------------------------ 7. re-review: the params' width, scores()
def test_params_read_a_registered_encoders_width_first():
    """DenseParams' own check of reduce against the model's width read KNOWN_DIMS, not the encoder registered
    under the name (78b7787 changed check_corpus only): a 1024-d encoder registered as all-MiniLM-L6-v2 could
    not be built with reduce: pca:500 (384 known), and pca:2000 was refused naming 384.  A registered encoder's
    width is read at fit (check_corpus), not when the parameters are checked: its dim may cost a model load or an
    API call (a LangChain model's probe)."""
    from ragkit.encoders.custom import registered_encoder, unregister_encoder

    name = "all-MiniLM-L6-v2"
    before = registered_encoder(name)
    register_encoder(name, HashedEncoder("dense-s53-minilm-1024", 1024), replace=True)
    try:
        assert Dense(model=name, reduce="pca:500").params.reduce == "pca:500"
        Dense(model=name, reduce="pca:500").check_corpus(_corpus(600))
        for reduce in ("pca:2000", "matryoshka:1025"):
            op = Dense(model=name, reduce=reduce)  # (built without reading the encoder's dim)
            with pytest.raises(ParamError, match=rf"'{reduce}' asks for \d+ dimensions but {name} embeddings have "
                                                 r"1024.*choose at most \w+:1024"):
                op.check_corpus(_corpus(600))
    finally:
        unregister_encoder(name)
        if before is not None:
            register_encoder(name, before)
    with pytest.raises(ParamError, match=r"^dense\.reduce: 'pca:500' .* have 384, only 384 to keep; choose at most "
                                         r"pca:384$"):
        Dense(model=name, reduce="pca:500")  # (unregistered: KNOWN_DIMS)


def test_scores_meets_params_replaced_after_the_fit():
    """scores() read params.metric itself, skipping _sync_index: a metric changed after the fit silently gave
    raw inner products over the vectors the index had normalised (searches refused it)."""
    d = Dense(model=MODEL, k=5, metric="cos").fit(_corpus(40))
    q = np.random.default_rng(1).standard_normal((2, 24)).astype(np.float32) * 3
    before = d.scores(q)
    d.params = d.params.updated(metric="ip")
    with pytest.raises(ParamError, match=r"^dense\.metric: .*fitted index was built with metric='cos'") as e:
        d.scores(q)
    assert e.value.path == "dense.metric"
    d.params = d.params.updated(metric="cos", threads=1)  # set back (a setting changed meanwhile: applied)
    np.testing.assert_array_equal(d.scores(q), before)
    assert d.index_.threads == 1


# ------------------------------------------------------------------ 8. re-review: exact search, a live -inf score
def test_exact_search_after_a_removal_keeps_a_live_slot_scoring_minus_inf():
    """The contiguous-block exact search (1e32677) scores removed slots -inf; a live slot can score -inf too (ip,
    f32 vectors of 1e20 overflow), and a removed slot won the tie (lower slot) and became -1: slot 4 was lost."""
    from ragkit.retrievers._index import VectorIndex

    x = np.full((5, 8), 1e20, np.float32)
    ix = VectorIndex(dtype="f32", metric="ip", search="exact").build(x)
    ix.remove(np.array([0]))
    q = np.full((1, 8), -1e20, np.float32)
    with np.errstate(over="ignore"):
        want = ix.search(q, 4, mask=np.ones(5, bool))
        for k in (4, 5):
            got = ix.search(q, k)
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a[:, :4], b)
            assert sorted(got[0][0, :4].tolist()) == [1, 2, 3, 4]
        both = ix.search(np.concatenate([q, -q]), 4)  # (only the query that lost a slot is searched again)
    np.testing.assert_array_equal(both[0], [[1, 2, 3, 4], [1, 2, 3, 4]])


# ------------------------------------------------------------------ 9. re-review: an i8 / f16 graph's rebuild
def test_graph_rebuild_clusters_its_codes_as_they_are():
    """A non-b1 graph rebuilt from its live codes (remove past GRAPH_DEAD_FRACTION) copied them all to float32
    for insertion_order (4x an i8 graph's codes), which converts a chunk at a time itself: the codes are handed
    over as they are, in the same order (k-means sample and assignment convert exactly)."""
    from conftest import traced_peak

    from ragkit.retrievers._index import VectorIndex
    from ragkit.retrievers._locality import REORDER_MIN, insertion_order

    rng = np.random.default_rng(3)
    n, d = 25_000, 128
    ix = VectorIndex(dtype="i8", search="hnsw", threads=1).build(rng.standard_normal((n, d)).astype(np.float32))
    live = np.flatnonzero(np.arange(n) % 3 != 0)
    assert len(live) >= REORDER_MIN  # (a rebuild that reorders)
    codes = ix._live_codes(live)
    _, peak = traced_peak(lambda: ix.remove(np.arange(0, n, 3)))  # a third: the graph is rebuilt
    assert len(ix.usearch) == len(live)
    matrix = codes.size * 4  # a float32 copy of the live codes (old: 1.66x it; now 1.29x)
    assert peak < 1.45 * matrix, (peak / matrix, peak / codes.nbytes)
    small = rng.standard_normal((REORDER_MIN + 500, 16)).astype(np.float32)
    for codes in (small, small.astype(np.float16), np.clip(np.round(small * 40), -127, 127).astype(np.int8)):
        assert ix._code_points(codes) is codes
        np.testing.assert_array_equal(insertion_order(codes), insertion_order(codes.astype(np.float32)))


# ------------------------------------------------------------------ 10. re-review: the load's check is _sync_index's
@pytest.mark.parametrize("key, value", [("dtype", "f16"), ("metric", "ip"), ("search", "hnsw")])
def test_load_refuses_params_that_misdescribe_the_saved_index(tmp_path, key, value):
    """params.json edited after the save to describe another index: an ArtifactError naming params.json, the
    key and both values (the load's check is _sync_index's loop, with the load's own error)."""
    import json

    from ragkit.errors import ArtifactError

    Dense(model=MODEL, k=5, dtype="i8", search="exact").fit(_corpus(40)).save(tmp_path / "d")
    p = tmp_path / "d" / "params.json"
    saved = json.loads(p.read_text())
    built = saved["params"].get(key, Dense.Params.model_fields[key].default)
    saved["params"][key] = value
    p.write_text(json.dumps(saved))
    with pytest.raises(ArtifactError, match=rf"params\.json: {key} is '{value}', but the saved index was built with "
                                            rf"{key} '{built}' \(recorded in .*index\.json\); the folder was changed "
                                            rf"after saving: set {key} back to '{built}', or fit it again with "
                                            rf"{key}='{value}' and save it$"):
        Dense.load(tmp_path / "d", verify=False)


def test_building_a_dense_step_reads_no_registered_encoders_dim():
    """3bcce4b read a registered encoder's dim when the parameters were checked: a LangChain model without dim
    given was called (its probe) by Dense(model=..., reduce=...), by every params.updated and by ragkit validate."""
    from ragkit.encoders.custom import unregister_encoder

    calls: list[int] = []

    class Costly:  # (an encoder whose dim costs a call, as a LangChain model's probe does)
        key = "dense-s53-costly"

        def encode(self, texts, **kw):  # noqa: ANN001, ANN003, ANN201
            return HashedEncoder(self.key, 64).encode(texts)

        encode_queries = encode

        @property
        def dim(self) -> int:
            calls.append(1)
            return 64

    register_encoder("dense-s53-costly", Costly())
    try:
        op = Dense(model="dense-s53-costly", reduce="pca:8")
        op.params.updated(k=5)
        assert calls == []
    finally:
        unregister_encoder("dense-s53-costly")
