"""Fourth review of Ray scale-out: operators registered in the driver (``--import ./myops.py``, ``import myops``) are
known on Ray workers, a Ray-searched ``dense`` encodes the queries once per actor (not once per shard), the merge of
shard rankings is flat and keeps the shards' own order of equal scores, a wrong Ray address names the setting that
gave it, and ``Sharded.add`` / ``remove`` say the index is fixed at fit."""

from __future__ import annotations

import re
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import ranked, word_corpus

from ragkit import _distributed, _merge, _plugins, _ray, _ray_encode, _sharded, registry, scale
from ragkit.errors import ParamError
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25, Dense
from ragkit.scale import Sharded, merge_rankings, search_distributed
from ragkit.types import Ranking

QUERIES = ["w1 w2 w3", "w4 w5", "w7 w11 w13", "w20 w21"]


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if anything starts (or joins) Ray."""
    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started")

    for module in (_ray_encode, _sharded, _distributed):
        monkeypatch.setattr(module, "ray_init", refuse)


@pytest.fixture
def plugin_files(tmp_path):
    """Operators registered in this process only, from a module file imported by path (as ``ragkit --import
    ./rr4ops.py`` does) and from a package's module imported by name with its folder put on ``sys.path`` after Ray
    started: Ray workers find neither on their own.  Unregistered (and the modules forgotten) afterwards."""
    from ragkit._plugins import _import_module

    (tmp_path / "rr4ops.py").write_text(textwrap.dedent("""
        from ragkit.registry import register
        from ragkit.retrievers import BM25

        @register
        class RR4BM25(BM25):
            name = "rr4bm25"
    """))
    pkg = tmp_path / "root" / "rr4pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("X = 1\n")
    (pkg / "ops.py").write_text(textwrap.dedent("""
        from ragkit.registry import register
        from ragkit.retrievers import BM25
        from . import helper  # (a relative import: only as a package)

        @register
        class RR4PkgBM25(BM25):
            name = "rr4pkgbm25"
    """))
    _import_module(str(tmp_path / "rr4ops.py"), "--import")
    sys.path.append(str(tmp_path / "root"))
    import importlib

    importlib.import_module("rr4pkg.ops")
    try:
        yield ["rr4bm25", "rr4pkgbm25"]
    finally:
        sys.path.remove(str(tmp_path / "root"))
        for name in ("rr4bm25", "rr4pkgbm25"):
            registry._REGISTRY.pop(name, None)
        for module in ("rr4ops", "rr4pkg", "rr4pkg.ops", "rr4pkg.helper"):
            sys.modules.pop(module, None)


# ---------------------------------------------------------------- 1. operators registered in the driver
def test_an_operator_registered_in_the_driver_fits_and_searches_on_ray(local_ray, plugin_files):
    corpus = word_corpus(60)
    want = ranked(BM25(k=5).fit(corpus).search(QUERIES))
    for name in plugin_files:
        sharded = Pipeline([Sharded(retriever={name: {}}, n_shards=3, k=5, backend="ray")]).fit(corpus)
        assert ranked(sharded.search(QUERIES)) == want, name
        one = Pipeline([registry.get(name)(k=5)]).fit(corpus)
        assert ranked(search_distributed(one, QUERIES, n_chunks=2)) == want, name


def test_a_worker_imports_the_drivers_file_not_a_module_of_the_same_name(tmp_path):
    """A plugin file named as a module the worker had imported (``code.py``: the standard library's ``code``) was
    skipped on Ray workers, which then knew no such operator; the driver's file wins (a Ray worker's import, in a
    fresh process)."""
    import subprocess

    (tmp_path / "code.py").write_text(textwrap.dedent("""
        from ragkit.registry import register
        from ragkit.retrievers import BM25

        @register
        class RR4Code(BM25):
            name = "rr4code"
    """))
    script = ("import code, sys\nfrom ragkit._plugins import _import_plugins\nfrom ragkit import registry\n"
              f"_import_plugins([('code', {str(tmp_path / 'code.py')!r})])\n"
              "print(registry.get('rr4code').__name__)\n"
              f"_import_plugins([('code', {str(tmp_path / 'code.py')!r})])  # (imported already: kept)\n"
              "print(registry.get('rr4code').__name__)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["RR4Code", "RR4Code"], out.stderr[-2000:]


def test_an_operator_no_ray_worker_could_import_is_refused_before_ray_starts(no_ray):
    class Local(BM25):
        name = "rr4local"

    registry.register(Local)
    try:
        corpus = word_corpus(30)
        with pytest.raises(ParamError, match=r"sharded\.fit: operator 'rr4local' .* inside a function.*entry point"):
            Sharded(retriever={"rr4local": {}}, n_shards=2, k=5, backend="ray").fit(corpus)
        with pytest.raises(ParamError, match=r"fit\(backend='ray'\): operator 'rr4local'"):
            Pipeline([Sharded(retriever={"rr4local": {}}, n_shards=2, k=5)]).fit(corpus, backend="ray")
        fitted = Sharded(retriever={"rr4local": {}}, n_shards=2, k=5, backend="local").fit(corpus)
        fitted._backend = "ray"
        with pytest.raises(ParamError, match=r"sharded\.search: operator 'rr4local'"):
            fitted.search(QUERIES)
        with pytest.raises(ParamError, match=r"search_distributed: operator 'rr4local'"):
            search_distributed(Local(k=5).fit(corpus), QUERIES)
        Local.__module__, Local.__qualname__ = "__main__", "Local"
        with pytest.raises(ParamError, match=r"defined in the script being run.*--import \./myops\.py"):
            search_distributed(Local(k=5).fit(corpus), QUERIES)
    finally:
        registry._REGISTRY.pop("rr4local", None)


def test_ragkit_operators_need_no_import():
    assert _plugins._plugin_modules([BM25, Dense, Sharded], "here") == []


# ---------------------------------------------------------------- 2. query vectors once per actor
class _CountingEncoder:
    """A registered (per-process) encoder, counting the query batches it encodes."""

    key = "test-rr4-count-v1"
    dim = 8

    def __init__(self) -> None:
        self.query_calls = 0

    def encode(self, texts, **kw):
        out = np.full((len(texts), 8), 1e-3, np.float32)
        for i, t in enumerate(texts):
            for w in str(t).split():
                out[i, sum(map(ord, w)) % 8] += 1
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_queries(self, texts, **kw):
        self.query_calls += 1
        return self.encode(texts)


def _shard_actor(model: str, tmp_path):
    """A 4-shard local ``dense`` over 40 documents of ``model`` and a shard actor (not on Ray) serving its
    shards: ``(sharded, actor)``."""
    corpus = word_corpus(40)
    sh = Sharded(retriever={"dense": {"model": model}}, n_shards=4, k=5, backend="local",
                 workdir=str(tmp_path)).fit(corpus)
    corpora = [corpus.subset(np.arange(a, b)) for a, b in zip(sh.bounds_[:-1], sh.bounds_[1:])]
    return sh, _sharded._ShardActor(sh.folders_, *corpora)


def test_a_shard_actor_encodes_the_queries_once_for_all_its_shards(tmp_path):
    """The actor's shards share one dict of query vectors, as a local search's do (it built a State per shard, so
    a dense encoded the query batch once per shard it served)."""
    from ragkit.encoders import register_encoder, unregister_encoder

    enc = _CountingEncoder()
    register_encoder("test-rr4-count", enc, replace=True)
    try:
        sh, actor = _shard_actor("test-rr4-count", tmp_path)
        assert actor.error is None
        enc.query_calls = 0
        parts = actor.search(QUERIES, {"k": 5})
        assert enc.query_calls == 1
        merged = _merge._split(*_merge._merge_flat(
            [(r + off, s, n) for (r, s, n), off in zip(parts, sh.bounds_[:-1])], 5))
        assert [r.rows.tolist() for r in merged] == [r.rows.tolist() for r in sh.search(QUERIES).rankings]
    finally:
        unregister_encoder("test-rr4-count")


def test_a_shard_actor_keeps_each_shards_own_deeper_k(tmp_path):
    """An operator called on a State cuts its rankings to a top-level ``options["k"]`` when it is the outermost
    call; a shard actor's call is a step of the driver's search (which cuts to the call's k itself), so a shard's
    own deeper k (``dense: {k: 8}``) was cut to the sharded k (5)."""
    from ragkit.encoders import register_encoder, unregister_encoder

    register_encoder("test-rr4-deep", _CountingEncoder(), replace=True)
    try:
        _, actor = _shard_actor("test-rr4-deep", tmp_path)
        parts = actor.search(QUERIES, {"k": 5, "dense": {"k": 8}})
        assert {int(n) for _, _, lengths in parts for n in lengths} == {8}
    finally:
        unregister_encoder("test-rr4-deep")


# ---------------------------------------------------------------- 4. the flat merge
def _old_merge(parts, k):
    """The merge before: one lexsort of every query's candidates by (query, -score, row)."""
    n_q = len(parts[0]) if parts else 0
    lens = np.array([[len(p[i]) for i in range(n_q)] for p in parts], dtype=np.int64).reshape(len(parts), n_q)
    q = np.concatenate([np.repeat(np.arange(n_q), lens[s]) for s in range(len(parts))])
    rows = np.concatenate([r.rows for p in parts for r in p])
    scores = np.concatenate([r.scores for p in parts for r in p])
    order = np.lexsort((rows, -scores, q))
    q, rows, scores = q[order], rows[order], scores[order]
    bounds = np.searchsorted(q, np.arange(n_q + 1))
    return [Ranking(rows[a:min(b, a + k)], scores[a:min(b, a + k)]) for a, b in zip(bounds[:-1], bounds[1:])]


@pytest.mark.parametrize("seed", range(5))
def test_the_flat_merge_equals_the_old_one_on_random_ties(seed, monkeypatch):
    """Scores from a few values (many ties, within and across shards), shards ranked as a shard ranks
    (score descending, lower row first), some queries empty in some shards; also in chunks of queries."""
    rng = np.random.default_rng(seed)
    n_q, n_s, size = 50, 4, 30
    parts = []
    for s in range(n_s):
        shard = []
        for _ in range(n_q):
            n = int(rng.integers(0, 12))
            rows = np.sort(rng.choice(size, n, replace=False)) + s * size
            sc = rng.choice(np.array([-np.inf, 0.0, 0.5, 1.0, 2.0], np.float32), n)
            order = np.lexsort((rows, -sc))
            shard.append(Ranking(rows[order], sc[order]))
        parts.append(shard)
    for chunk in (1 << 22, 37):
        monkeypatch.setattr(_merge, "_MERGE_CELLS", chunk)
        for k in (1, 5, 100):
            new, old = merge_rankings(parts, k), _old_merge(parts, k)
            assert [r.rows.tolist() for r in new] == [r.rows.tolist() for r in old]
            assert [r.scores.tolist() for r in new] == [r.scores.tolist() for r in old]
    assert merge_rankings([], 3) == []
    assert [len(r) for r in merge_rankings([[Ranking.empty()] * 2, [Ranking.empty()] * 2], 3)] == [0, 0]


def test_equal_float32_scores_keep_the_shards_own_order():
    """A shard ranks two documents whose float32 scores are equal by its finer score (bm25's float64): the merge
    keeps that order, as one index has it (it re-sorted them by row)."""
    a = [Ranking([7, 5, 3], np.float32([2.0, 1.0, 1.0]))]
    b = [Ranking([12, 10], np.float32([1.0, 0.5]))]
    assert merge_rankings([a, b], 4)[0].rows.tolist() == [7, 5, 3, 12]


# ---------------------------------------------------------------- 5. a wrong address, add / remove
def test_a_ray_address_that_cannot_be_joined_names_the_setting(monkeypatch):
    def init(**kwargs):
        raise ConnectionError("could not connect to GCS")

    monkeypatch.setattr(_ray, "_ray", lambda: SimpleNamespace(is_initialized=lambda: False, init=init))
    monkeypatch.setattr(_ray, "_probe", lambda address: None)  # (Ray's own failure to join)
    monkeypatch.setenv("RAGKIT_RAY_ADDRESS", "10.9.9.9:6379")
    with pytest.raises(ParamError, match=r"at '10\.9\.9\.9:6379', the address \$RAGKIT_RAY_ADDRESS names "
                                         r"\(ConnectionError: could not connect to GCS\).*unset it") as got:
        scale.ray_init()
    assert got.value.path == "$RAGKIT_RAY_ADDRESS"
    with pytest.raises(ParamError, match=r"at 'h:1', the address ray_init\(address=\.\.\.\) names"):
        scale.ray_init(address="h:1")
    monkeypatch.delenv("RAGKIT_RAY_ADDRESS")
    monkeypatch.setenv("RAY_ADDRESS", "h:2")
    with pytest.raises(ParamError, match=r"at 'h:2', the address \$RAY_ADDRESS \(read by Ray itself\) names"):
        scale.ray_init()


def test_an_address_where_nothing_answers_is_refused_without_waiting_on_ray(monkeypatch):
    """ray.init on an address where nothing listens retried for minutes without a word: a port that does not
    answer is refused at once, naming the setting, before Ray is asked."""
    import socket
    import time

    def init(**kwargs):
        raise AssertionError("ray.init was called")

    monkeypatch.setattr(_ray, "_ray", lambda: SimpleNamespace(is_initialized=lambda: False, init=init))
    with socket.socket() as free:  # a local port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    t0 = time.monotonic()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ParamError, match=rf"could not join the Ray cluster at '{re.escape(address)}'.*"
                                             rf"nothing answers at 127\.0\.0\.1:{port}"):
            scale.ray_init(address=address)
    assert time.monotonic() - t0 < 2 * _ray.PROBE_TIMEOUT_S
    _ray._probe("auto")  # (Ray's own words: not probed)


def test_sharded_add_and_remove_say_the_index_is_fixed_at_fit():
    sh = Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="local").fit(word_corpus(20))
    for what in ("add", "remove"):
        with pytest.raises(AttributeError, match=rf"sharded: {what} is not supported: a sharded index is fixed at "
                                                 rf"fit.*refit"):
            getattr(sh, what)(word_corpus(2, offset=100))
        assert not hasattr(sh, what)  # (so a pipeline says it cannot be edited, as for any such operator)


# ---------------------------------------------------------------- 3. float32 ties across bm25 shards
def test_bm25_shards_tied_at_float32_rank_as_one_index(scifact):
    """Two documents of two shards whose float64 scores differ but round to one float32 score: the merge ordered
    them by row (the lower shard's first), so the cut at k kept the other document than one index does
    (the reviewer's slice: 300 documents, query 644, k 90)."""
    corpus, qrels = scifact.corpus, scifact.qrels("test")
    pos = {d: i for i, d in enumerate(corpus.ids)}
    keep = sorted({pos[d] for q in qrels.values() for d in q if d in pos})
    rest = [i for i in range(len(corpus)) if i not in set(keep)]
    sub = corpus.subset(np.array(sorted(keep + rest[:max(0, 300 - len(keep))])[:300]))
    query = [t for qid, t in scifact.queries("test") if qid == "644"]
    one = BM25(k=90).fit(sub).search(query)
    sharded = Sharded(retriever={"bm25": {}}, n_shards=3, k=90, backend="local").fit(sub).search(query)
    assert sharded.doc_ids[0].tolist() == one.doc_ids[0].tolist()
    for n in (2, 5):  # and other cuts of the same corpus, on more queries
        queries = [t for _, t in scifact.queries("test")][:100]
        one = BM25(k=90).fit(sub).search(queries)
        sharded = Sharded(retriever={"bm25": {}}, n_shards=n, k=90, backend="local").fit(sub).search(queries)
        assert [d.tolist() for d in sharded.doc_ids] == [d.tolist() for d in one.doc_ids]


def test_the_merge_orders_two_shards_float32_ties_by_the_finer_score():
    # (each part's 4th array: its candidates' float64 scores, as the shards send them)
    a = (np.array([0, 1]), np.float32([2.0, 1.0]), np.array([2]), np.array([2.0, 1.0 - 1e-9]))
    b = (np.array([10, 11]), np.float32([1.0, 1.0]), np.array([2]), np.array([1.0, 1.0 - 1e-9]))
    rows, scores, lens = _merge._merge_flat([a, b], 3)
    assert rows.tolist() == [0, 10, 1] and lens.tolist() == [3]  # row 1 ties row 10 at float32, scores lower
    # no tie across shards: the float64 scores are not read (ones that would reorder the float32 order are ignored)
    a_off = (*a[:3], np.array([0.0, 9.0]))
    rows, _, _ = _merge._merge_flat([a_off, (np.array([10]), np.float32([0.5]), np.array([1]), np.array([9.0]))], 3)
    assert rows.tolist() == [0, 1, 10]


# ---------------------------------------------------------------- 6. no queries; ties past a same-shard cut
def test_a_sharded_retriever_searches_a_batch_of_no_queries(no_ray):
    """No queries: an empty run, as one index gives (the merge split its empty flat arrays into one ranking)."""
    from ragkit.types import State

    sh = Sharded(retriever={"bm25": {}}, n_shards=3, k=5, backend="local").fit(word_corpus(30))
    for queries in ([], {}):
        run = sh.search(queries)
        assert len(run) == 0 and len(run.doc_ids) == 0
    assert sh(State([])).rankings == []
    assert merge_rankings([[], []], 5) == []
    assert _merge._split(*_merge._merge_flat([_merge._flatten([])] * 2, 5)) == []


def test_a_ray_sharded_retriever_searches_a_batch_of_no_queries(local_ray):
    sh = Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="ray").fit(word_corpus(20))
    assert len(sh.search([])) == 0
    assert ranked(sh.search(QUERIES[:2])) == ranked(BM25(k=5).fit(word_corpus(20)).search(QUERIES[:2]))


def _tie_corpus():
    """x and x2 (shard 0) and y (shard 1) score one float32 score for "zeta" (b ~ 0: length barely counts), y the
    highest float64 one; the run of equal float32 scores is x, x2 (shard 0), then y."""
    from ragkit.types import Corpus

    def doc(tf, dl, i):
        return " ".join(["zeta"] * tf + [f"w{i}x{j}" for j in range(dl - tf)])

    texts = [doc(1, 12, 0), doc(1, 12, 1), doc(0, 5, 2), doc(0, 5, 3), doc(1, 10, 4), doc(0, 5, 5), doc(0, 5, 6),
             doc(0, 5, 7)]
    return Corpus.from_texts(texts, ids=["x", "x2", "f2", "f3", "y", "f5", "f6", "f7"])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_float32_tie_past_a_cut_between_one_shards_documents_ranks_as_one_index(k):
    """The cut at k=1 falls between x and x2, both shard 0's: the tie repair looked at neighbours in the first k + 1
    places only, found no two shards there, and kept x where one index ranks y (shard 1, float64 higher) first."""
    corpus, params = _tie_corpus(), {"b": 1e-8}
    s = BM25(**params).fit(corpus).score_matrix(["zeta"])[0][[0, 1, 4]]
    assert len(set(s.astype(np.float32).tolist())) == 1 and s[2] > s[0] == s[1]  # (the case holds)
    one = BM25(k=k, **params).fit(corpus).search(["zeta"])
    sharded = Sharded(retriever={"bm25": params}, n_shards=2, k=k, backend="local").fit(corpus).search(["zeta"])
    assert sharded.doc_ids[0].tolist() == one.doc_ids[0].tolist() == ["y", "x", "x2"][:k]
    # the merge itself, with a finer score given: rows 0, 1, 2 (shard 0) and 10 (shard 1) tie at float32
    fine = {0: 5.0000001, 1: 5.0000001, 2: 5.0000001, 10: 5.0000003}
    p0 = (np.array([0, 1, 2]), np.float32([5, 5, 5]), np.array([3]))
    p1 = (np.array([10]), np.float32([5]), np.array([1]))
    rows, _, lens = _merge._merge_flat([(*p0, np.array([fine[0], fine[1], fine[2]])), (*p1, np.array([fine[10]]))],
                                       k)
    assert rows.tolist() == [10, 0, 1][:k] and lens.tolist() == [k]


@pytest.mark.parametrize("seed", range(3))
def test_bm25_shards_with_many_float32_ties_rank_as_one_index(seed, monkeypatch):
    """Random documents over a few words with b ~ 0 (float64 scores a hair apart, many equal at float32) and
    duplicated documents (equal float64 scores: the lower row first), spread over the shards: every k from 1 to 10
    ranks as one index, also merged in chunks of a few queries."""
    from ragkit.types import Corpus

    rng = np.random.default_rng(seed)
    words = ["a", "b", "c", "d"]
    texts = [" ".join(rng.choice(words, int(rng.integers(1, 4))).tolist() + [f"f{i}x{j}" for j in
                                                                             range(int(rng.integers(0, 12)))])
             for i in range(60)]
    texts += [texts[int(i)] for i in rng.integers(0, 60, 20)]  # duplicates, in later shards
    rng.shuffle(texts)
    corpus = Corpus.from_texts(texts)
    queries = [" ".join(rng.choice(words, int(rng.integers(1, 4))).tolist()) for _ in range(30)]
    params = {"b": float(rng.choice([1e-8, 1e-9]))}
    for chunk in (1 << 22, 200):
        monkeypatch.setattr(_merge, "_MERGE_CELLS", chunk)
        for n in (2, 3, 7):
            for k in range(1, 11):
                one = BM25(k=k, **params).fit(corpus).search(queries)
                sharded = Sharded(retriever={"bm25": params}, n_shards=n, k=k, backend="local").fit(corpus)
                got = sharded.search(queries)
                assert [d.tolist() for d in got.doc_ids] == [d.tolist() for d in one.doc_ids], (n, k)
