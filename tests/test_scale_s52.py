"""Session 52's leftovers of the scale-out layer: bm25 shards keep their top-k's float64 scores for the merge (no
second sparse product, :func:`ragkit._sharded._pair_scores`), on Ray and locally."""

from __future__ import annotations

import numpy as np
import pytest

import ragkit.retrievers.bm25 as bm25_mod
from ragkit._sharded import Sharded, _live, _ShardActor
from ragkit.retrievers.bm25 import BM25
from ragkit.types import Corpus


def _tied_corpus(n: int = 600, seed: int = 0) -> Corpus:
    """Documents of a few words, many alike: single-term queries tie (float32 and float64) across shards."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(8)]
    docs = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(n)]
    return Corpus.from_texts(docs, ids=[f"d{i}" for i in range(n)])


_QUERIES = [f"w{i}" for i in range(8)] + ["w1 w2", "w3 w3 w4", "w0 w5 w6 w7", "nothing"]


def _float32_tied_corpus(seed: int = 0) -> tuple[Corpus, list[str]]:
    """Documents over a few words padded with words of their own, some repeated in later shards, and queries of
    those words: with b ~ 0 (``{"b": 1e-8}``) many candidates tie at float32 whose float64 scores differ by a hair
    (as test_ray_review4's many-float32-ties corpus): the merge must order such ties by the shards' float64."""
    rng = np.random.default_rng(seed)
    words = ["a", "b", "c", "d"]
    texts = [" ".join(rng.choice(words, int(rng.integers(1, 4))).tolist()
                      + [f"f{i}x{j}" for j in range(int(rng.integers(0, 12)))]) for i in range(60)]
    texts += [texts[int(i)] for i in rng.integers(0, 60, 20)]
    rng.shuffle(texts)
    queries = [" ".join(rng.choice(words, int(rng.integers(1, 4))).tolist()) for _ in range(30)]
    return Corpus.from_texts(texts, ids=[f"d{i}" for i in range(len(texts))]), queries


def _same(got, want) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.rows, w.rows)
        np.testing.assert_array_equal(g.scores, w.scores)


def _refuse_pair_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a, **kw):
        raise AssertionError("_pair_scores: a second sparse product of the shard's candidates")

    monkeypatch.setattr("ragkit._sharded._pair_scores", refuse)


@pytest.mark.parametrize("dense_topk", [False, True])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_local_bm25_shards_merge_ties_without_scoring_again(monkeypatch, dense_topk, n_jobs):
    """The local merge scored the tied candidates of two shards again (_pair_scores, through Sharded._finer): the
    shards' own top-k has their float64 scores.  With _pair_scores refused the merge still equals one index's, ids
    and scores, ties included (threads and the dense top-k path too).  The ties are float32 ones whose float64
    scores differ (ordered by the kept scores: with them zeroed, the merge orders them by row and differs)."""
    monkeypatch.setattr(bm25_mod, "_DENSE_TOPK", dense_topk)
    monkeypatch.setattr(bm25_mod, "_BLOCK_CELLS", 200)  # (several blocks of queries: n_jobs=2 runs them on threads)
    corpus, queries = _float32_tied_corpus()
    params = {"k": 40, "b": 1e-8}
    one = BM25(**params).fit(corpus)
    want = one.search(queries).rankings
    dense = one.score_matrix(queries)  # (the case holds: float32 ties of distinct float64 scores, in the top 40)
    assert any(len(np.unique(dense[i, r.rows].astype(np.float32))) < len(np.unique(dense[i, r.rows]))
               for i, r in enumerate(want))
    sharded = Sharded(retriever={"bm25": params}, n_shards=3, k=40, backend="local").fit(corpus)
    _refuse_pair_scores(monkeypatch)
    got = sharded.search(queries, bm25={"n_jobs": n_jobs}).rankings
    _same(got, want)
    assert any(len(np.unique(r.scores)) < len(r.scores) for r in got)  # (ties there were)


def test_shard_actor_sends_its_top_ks_float64_scores_without_scoring_again(monkeypatch):
    """_ShardActor.search(fine=True) (what a Ray actor runs) computed every candidate's float64 score by a second
    sparse product (_pair_scores), about doubling the actor's work: now the shard's top-k keeps them.  They are
    score_matrix's values of the candidates, to the bit, and the flat rankings are those of fine=False."""
    corpus = _tied_corpus(300, seed=1)
    sharded = Sharded(retriever={"bm25": {"k": 30}}, n_shards=3, k=30, backend="local").fit(corpus)
    live = _live(sharded.bounds_)
    actor = _ShardActor([sharded.folders_[s] for s in live],
                        *[corpus.subset(np.arange(sharded.bounds_[s], sharded.bounds_[s + 1])) for s in live])
    plain = actor.search(_QUERIES, {"k": 30}, None, False)
    _refuse_pair_scores(monkeypatch)
    fine = actor.search(_QUERIES, {"k": 30}, None, True)
    assert len(fine) == len(plain) == 3
    for op, f, p in zip(actor.ops, fine, plain):
        assert len(f) == 4
        for a, b in zip(f[:3], p):
            np.testing.assert_array_equal(a, b)
        rows, scores, lens, scores64 = f
        assert scores64.dtype == np.float64
        q = np.repeat(np.arange(len(lens)), lens)
        dense = op.score_matrix(_QUERIES)
        np.testing.assert_array_equal(scores64, dense[q, rows])
        np.testing.assert_array_equal(scores64.astype(np.float32), scores)


def test_ray_bm25_shards_merge_as_one_index_with_the_kept_scores(local_ray, monkeypatch):
    """On Ray (3 shards, single-term queries tying across them) the merge of the actors' kept float64 scores equals
    one index's, ids and scores; the driver scores nothing."""
    corpus = _tied_corpus(300, seed=2)
    want = BM25(k=30).fit(corpus).search(_QUERIES).rankings
    sharded = Sharded(retriever={"bm25": {"k": 30}}, n_shards=3, k=30, backend="ray").fit(corpus)
    _refuse_pair_scores(monkeypatch)
    _same(sharded.search(_QUERIES).rankings, want)
    _same(sharded.search(_QUERIES, filter=None, bm25={"k": 7}).rankings,
          BM25(k=30).fit(corpus).search(_QUERIES, bm25={"k": 7}).rankings)


def _hashed_dense_sharded(tmp_path, name: str):
    """A 3-shard local ``dense`` (int8 codes with float vectors to rescore: index files CRC32'd at load) over 60
    documents of a registered test encoder, saved: ``(sharded, corpus, folder)``."""
    from conftest import HashedEncoder

    from ragkit.encoders import register_encoder

    register_encoder(name, HashedEncoder(f"{name}-v1", 16), replace=True)
    corpus = Corpus([f"d{i}" for i in range(60)], [f"text {i} word{i % 7}" for i in range(60)])
    s = Sharded(retriever={"dense": {"model": name, "dtype": "i8", "rescore": True}}, n_shards=3,
                backend="local").fit(corpus)
    s.save(tmp_path / "s")
    return s, corpus, tmp_path / "s"


def test_a_shard_actor_of_a_verified_load_reads_no_index_crc(tmp_path, monkeypatch):
    """A Ray shard actor loaded its shards outside checksums_verified: after a load that verified the saved
    retriever's SHA-256 sums, every actor CRC32'd its shards' index files again (the driver's own shards do not,
    bccb0be).  Told verified, it reads none; not told (a load with verify=False), it keeps them."""
    from ragkit.encoders import unregister_encoder
    from ragkit.operator import Operator
    from ragkit.retrievers import _index_files

    s, corpus, folder = _hashed_dense_sharded(tmp_path, "scale-s52-hashed")
    try:
        back = Operator.load(folder)
        assert back._verified
        corpora = [corpus.subset(np.arange(a, b)) for a, b in zip(back.bounds_[:-1], back.bounds_[1:])]
        calls: list[str] = []
        orig = _index_files._crc
        monkeypatch.setattr(_index_files, "_crc", lambda path: calls.append(str(path)) or orig(path))
        actor = _ShardActor(back.folders_, *corpora, verified=True)
        assert actor.error is None and calls == [], calls
        assert all(op._verified for op in actor.ops)
        want = [sh.search(["text word3"]).doc_ids[0].tolist() for sh in back.shards_]
        got = [r.tolist() for r, _, _ in actor.search(["text word3"], {"k": 10})]
        assert [[f"d{int(back.bounds_[i]) + j}" for j in g] for i, g in enumerate(got)] == want
        _ShardActor(back.folders_, *corpora)
        assert calls, "not verified by the driver: the actor keeps its CRC32s"
    finally:
        unregister_encoder("scale-s52-hashed")


def test_ray_shard_actors_of_a_verified_load_load_their_shards_as_verified(local_ray, tmp_path):
    """On Ray: the actors of a sharded retriever loaded with its checksums verified hold shards loaded as verified
    (no CRC32s of their indexes); of one loaded with verify=False, not (they keep them), as the driver's."""
    from ragkit.operator import Operator

    corpus = _tied_corpus(90, seed=4)
    Sharded(retriever={"bm25": {"k": 5}}, n_shards=3, k=5, backend="ray").fit(corpus).save(tmp_path / "s")
    want = BM25(k=5).fit(corpus).search(_QUERIES).rankings
    for verify in (True, False):
        back = Operator.load(tmp_path / "s", verify=verify)
        _same(back.search(_QUERIES).rankings, want)
        actors = back._ray_actors(local_ray)
        held = local_ray.get([a.__ray_call__.remote(lambda self: [op._verified for op in self.ops]) for a in actors])
        assert [v for vs in held for v in vs] == [verify] * 3, (verify, held)
        back._drop_actors()


def test_a_search_distributed_chunk_loads_the_folder_it_was_given_mapped_and_unchecked(tmp_path, monkeypatch):
    """Every search_distributed chunk loaded the pipeline the driver had just saved with every file's SHA-256
    checked again, read into memory, and its corpus.jsonl parsed (400k docs: 0.41 s plain search vs 7.3 s
    distributed).  Given the digest of the manifest written and the corpus, a chunk loads it memory-mapped without
    the sums and without reading corpus.jsonl (ranking as pipe.search); a manifest that is not the one written is an
    ArtifactError; without a digest, the load checks as before."""
    import ragkit._distributed as dist
    import ragkit.eval.beir as beir
    import ragkit.pipelines.store as store
    from ragkit.errors import ArtifactError
    from ragkit.pipelines import Pipeline

    corpus = _tied_corpus(200, seed=5)
    pipe = Pipeline([BM25(k=7)]).fit(corpus)
    pipe.save(tmp_path / "p")
    written = dist._manifest_digest(tmp_path / "p")
    loads: list[tuple[bool, bool]] = []
    sums: list[int] = []
    real_load, real_sums = store.load_pipeline, store.verify_checksums
    monkeypatch.setattr(store, "load_pipeline", lambda folder, **kw: loads.append((kw["mmap"], kw["verify"])) or
                        real_load(folder, **kw))
    monkeypatch.setattr(store, "verify_checksums", lambda *a, **kw: sums.append(1) or real_sums(*a, **kw))
    parsed: list[str] = []
    real_read = beir.read_corpus
    monkeypatch.setattr(beir, "read_corpus", lambda path, **kw: parsed.append(str(path)) or real_read(path, **kw))
    ids, texts = [f"q{i}" for i in range(len(_QUERIES))], list(_QUERIES)
    got = dist._search_chunk(str(tmp_path / "p"), ids, texts, 5, None, written, corpus)
    assert loads == [(True, False)] and sums == [] and parsed == []
    want = pipe.search(dict(zip(ids, texts)), k=5)
    # (a chunk's rankings come back flat since session 54: rows, scores, lengths; the driver maps the rows to ids)
    rows, scores, lens = got[:3]
    assert lens.tolist() == [len(r.rows) for r in want.rankings]
    assert [list(d) for d in np.split(corpus.ids[rows], np.cumsum(lens)[:-1])] == [list(d) for d in want.doc_ids]
    np.testing.assert_array_equal(rows, np.concatenate([r.rows for r in want.rankings]))
    np.testing.assert_array_equal(scores, np.concatenate([r.scores for r in want.rankings]))
    with pytest.raises(ArtifactError, match=r"search_distributed: .*manifest\.json has SHA-256 .*expected "
                                            r"[0-9a-f]{16}\.\.\. \(the pipeline this search started with\)"):
        dist._search_chunk(str(tmp_path / "p"), ids, texts, 5, None, "0" * 64)
    loads.clear()
    dist._search_chunk(str(tmp_path / "p"), ids, texts, 5)
    assert loads == [(False, True)] and sums == [1] and len(parsed) == 1


def test_a_search_distributed_chunk_loads_its_steps_as_verified(tmp_path, monkeypatch):
    """A chunk loads the folder it was given with verify=False once the manifest's digest matches, but
    Pipeline.load ran the steps under checksums_verified(False): a dense step CRC32'd its index files (and a mapped
    BM25 scanned its weights) in every chunk.  The chunk's load counts as verified now (no _crc); a chunk without
    the digest (a plain checked load) reads no CRC32 either (the SHA-256 sums cover them)."""
    from conftest import HashedEncoder

    import ragkit._distributed as dist
    from ragkit.encoders import register_encoder
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Dense, _index_files

    register_encoder("scale-s52-hashed", HashedEncoder("scale-s52-hashed-v1", 16), replace=True)
    corpus = Corpus([f"d{i}" for i in range(60)], [f"text {i} word{i % 7}" for i in range(60)])
    pipe = Pipeline([Dense(model="scale-s52-hashed", k=5)]).fit(corpus)
    pipe.save(tmp_path / "p")
    calls: list[str] = []
    orig = _index_files._crc
    monkeypatch.setattr(_index_files, "_crc", lambda path: calls.append(str(path)) or orig(path))
    got = dist._search_chunk(str(tmp_path / "p"), ["q0"], ["text word3"], 5, None,
                             dist._manifest_digest(tmp_path / "p"), corpus)
    assert calls == [], calls
    assert list(corpus.ids[got[0]]) == list(pipe.search({"q0": "text word3"}, k=5).doc_ids[0])  # (rows, flat)
    dist._search_chunk(str(tmp_path / "p"), ["q0"], ["text word3"], 5)
    assert calls == [], calls
    Pipeline.load(tmp_path / "p", corpus, mmap=True, verify=False)  # (outside a chunk: not verified, CRC32s kept)
    assert calls, "verify=False keeps the dense index's CRC32s"


def test_search_distributed_ranks_as_pipe_search_with_the_unchecked_mapped_chunks(local_ray):
    """search_distributed (chunks loading its folder mapped, unchecked) still ranks as pipe.search: ids, scores and
    tie order, a sharded bm25 step's included."""
    from ragkit.pipelines import Pipeline
    from ragkit.scale import search_distributed

    corpus = _tied_corpus(240, seed=6)
    for pipe in (Pipeline([BM25(k=9)]).fit(corpus),
                 Pipeline([Sharded(retriever={"bm25": {}}, n_shards=3, k=9, backend="local")]).fit(corpus)):
        want = pipe.search(_QUERIES)
        got = search_distributed(pipe, _QUERIES, n_chunks=2)
        _same(got.rankings, want.rankings)
