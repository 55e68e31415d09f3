"""A fitted pipeline served from many threads (a web app's workers, ``ainvoke`` in executor threads).

Concurrent ``invoke`` / ``batch`` / ``ainvoke`` / ``search`` calls answer what the same calls answer one
by one; the shared encoder caches (on-disk vector readers, the token encoder's query memo) stay
consistent when threads read and extend them at once; and a search while another thread edits the
index (``add`` / ``remove``) through :class:`RagkitRetriever` answers with the documents its rows index,
or fails with a clear error, never with other documents.

The races are made likely, not certain, by running many small calls with a short thread switch
interval; every test below failed on the code before its fix in several runs out of several.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import switching_often
from langchain_core.embeddings import DeterministicFakeEmbedding

from ragkit.encoders.cache import EmbeddingCache
from ragkit.encoders.tokens import TokenCache, TokenEncoder, TokenVectors
from ragkit.errors import DataError
from ragkit.integrations.langchain import LangChainEmbeddingsEncoder, RagkitRetriever, load_pipeline_like
from ragkit.pipelines import RRF
from ragkit.retrievers import BM25, Dense
from ragkit.types import Corpus

N_THREADS, CALLS = 8, 20
FAKE = "fake-concurrency-32"


def in_threads(work: Callable[[int], None], n: int = N_THREADS) -> Counter[str]:
    """Run ``work(thread number)`` on ``n`` threads started together; the errors they raised, counted."""
    errors: Counter[str] = Counter()
    start = threading.Barrier(n)

    def run(t: int) -> None:
        start.wait()
        try:
            work(t)
        except Exception as e:  # noqa: BLE001 - counted and reported by the test
            errors[f"{type(e).__name__}: {e}"[:200]] += 1

    threads = [threading.Thread(target=run, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "a thread is still running after 120 s (deadlock?)"
    return errors


@pytest.fixture(scope="module")
def fake_model() -> str:
    LangChainEmbeddingsEncoder(DeterministicFakeEmbedding(size=32), key=FAKE).register(FAKE, replace=True)
    return FAKE


@pytest.fixture(scope="module")
def scifact_slice(slice_data: Any) -> tuple[Corpus, list[str]]:
    corpus, queries, _, train = slice_data
    return corpus, list(queries.texts) + list(train.queries.texts[:20])


class _Answer:
    """The documents' ids, and their scores to 1e-5: torch on threads busy with other calls may sum in
    another order (last-digit differences; rounding to 4 places would still flip at a boundary)."""

    def __init__(self, docs: list[Any]) -> None:
        self.ids = [d.id for d in docs]
        self.scores = np.array([float(d.metadata["score"]) for d in docs])

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, _Answer) and self.ids == other.ids
                and bool(np.allclose(self.scores, other.scores, rtol=0, atol=1e-5)))

    def __repr__(self) -> str:
        return f"_Answer({list(zip(self.ids, self.scores.round(6).tolist()))})"


def _key(docs: list[Any]) -> _Answer:
    return _Answer(docs)


def _hammer(r: RagkitRetriever, queries: list[str], **options: Any) -> None:
    """8 threads x 20 calls of invoke / batch / pipeline.search, plus ainvoke through asyncio.gather,
    each compared with the same call made alone."""
    ref = {q: _key(r.invoke(q, **options)) for q in queries}
    pipe = r.pipeline
    mismatches: list[tuple[int, int, str]] = []

    def work(t: int) -> None:
        rng = random.Random(t)
        for j in range(CALLS):
            if j % 3 == 0:
                q = rng.choice(queries)
                if _key(r.invoke(q, **options)) != ref[q]:
                    mismatches.append((t, j, q))
            elif j % 3 == 1:
                qs = rng.sample(queries, 3)
                for q, docs in zip(qs, r.batch(qs, **options)):
                    if _key(docs) != ref[q]:
                        mismatches.append((t, j, q))
            else:
                q = rng.choice(queries)
                run = pipe.search([q], k=r.k, **options)
                if run.doc_ids[0].tolist() != ref[q].ids:
                    mismatches.append((t, j, q))

    errors = in_threads(work)
    assert not errors and not mismatches, (errors, mismatches[:5])

    async def gather() -> list[list[Any]]:
        return await asyncio.gather(*(r.ainvoke(q, **options) for q in queries))

    assert [_key(d) for d in asyncio.run(gather())] == [ref[q] for q in queries]


# ------------------------------------------------------------------ whole pipelines, many threads
@pytest.mark.parametrize("which", ["bm25", "bm25_n_jobs", "dense", "hybrid", "loaded_hybrid"])
def test_concurrent_calls_answer_as_sequential_ones(which: str, scifact_slice: Any, fake_model: str,
                                                    tmp_path: Path) -> None:
    corpus, queries = scifact_slice
    options: dict[str, Any] = {"bm25": {"n_jobs": 2}} if which == "bm25_n_jobs" else {}
    if which.startswith("bm25"):
        pipe: Any = BM25(k=30).fit(corpus)
    elif which == "dense":
        pipe = Dense(k=30, model=fake_model).fit(corpus)
    else:
        pipe = ((BM25(k=30) + Dense(k=30, model=fake_model, search="hnsw")) | RRF(k=60)).fit(corpus)
        if which == "loaded_hybrid":  # a saved folder, its first searches made by the threads at once
            pipe.save(tmp_path / "p")
            pipe = load_pipeline_like(tmp_path / "p")
    with switching_often(1e-4):
        _hammer(RagkitRetriever(pipeline=pipe, k=10), queries[:24], **options)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["minilm_hybrid", "muvera", "cosine_adapter_mmr", "dbnorm"])
def test_concurrent_calls_answer_as_sequential_ones_with_real_models(which: str, slice_data: Any,
                                                                     tmp_path: Path) -> None:
    """The same with MiniLM (sentence and token vectors) and the learned filters, saved and loaded."""
    from ragkit.filters import MMR, CosineAdapter, DBNorm, TopK
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Muvera

    corpus, queries, _, train = slice_data
    pipe: Any = {
        "minilm_hybrid": lambda: (BM25(k=50) + Dense(k=50)) | RRF(k=60) | TopK(k=20),
        "muvera": lambda: Muvera(k=20),
        "cosine_adapter_mmr": lambda: Pipeline([Dense(k=50), CosineAdapter(), MMR(k=10)]),
        "dbnorm": lambda: Pipeline([Dense(k=50), DBNorm(), TopK(k=10)]),
    }[which]().fit(corpus, train if which in ("cosine_adapter_mmr", "dbnorm") else None)
    pipe.save(tmp_path / "p")
    for p in (pipe, load_pipeline_like(tmp_path / "p")):
        _hammer(RagkitRetriever(pipeline=p, k=10), list(queries.texts))


# ------------------------------------------------------------------ search while another thread edits
def _paused(op: Any) -> tuple["queue.Queue[int]", "queue.Queue[int]"]:
    """Make each of ``op``'s searches stop after ranking: it puts a token in ``paused``, then waits for
    one in ``go`` (so another thread edits the index between the ranking and the end of the search)."""
    real, paused, go = op._call, queue.Queue(), queue.Queue()

    def slow(state: Any) -> Any:
        out = real(state)
        paused.put(1)
        go.get(timeout=60)
        return out

    op._call = slow
    return paused, go


def _toy(fake_model: str) -> tuple[Corpus, Dense]:
    texts = [f"document number {i} about topic {i % 7}" for i in range(40)]
    corpus = Corpus(ids=[f"d{i}" for i in range(40)], texts=texts)
    return corpus, Dense(model=fake_model, k=10).fit(corpus)


def test_remove_during_a_search_never_returns_other_documents(fake_model: str) -> None:
    """The rows of a search were mapped onto the corpus the pipeline held after it: a ``remove`` on
    another thread during the search shifted every later row, so other documents (their own texts and
    ids, the wrong ones) came back.  Now the search is made again on the edited index."""
    corpus, op = _toy(fake_model)
    r = RagkitRetriever(pipeline=op, k=5)
    q = corpus.texts[20]
    alone = _key(r.invoke(q))
    paused, go = _paused(op)
    out: dict[str, Any] = {}
    th = threading.Thread(target=lambda: out.setdefault("docs", r.invoke(q)))
    th.start()
    paused.get(timeout=30)
    op.remove([next(i for i in corpus.ids.tolist() if i not in alone.ids)])  # one no query ranks; rows shift
    go.put(1)
    go.put(1)  # for a second search
    th.join(30)
    assert _key(out["docs"]) == alone
    assert paused.qsize() == 1  # searched again after the edit


def test_add_during_a_search_is_kept_without_searching_again(fake_model: str, scifact_slice: Any) -> None:
    """Documents only appended (``add``) leave every row of the search where it was: its answer stands."""
    corpus, queries = scifact_slice
    bm = BM25(k=10).fit(corpus.subset(np.arange(200)))
    r = RagkitRetriever(pipeline=bm, k=5)
    alone = _key(r.invoke(queries[0]))
    paused, go = _paused(bm)
    out: dict[str, Any] = {}
    th = threading.Thread(target=lambda: out.setdefault("docs", r.invoke(queries[0])))
    th.start()
    paused.get(timeout=30)
    bm.add(corpus.subset(np.arange(200, len(corpus))))
    go.put(1)
    th.join(30)
    assert _key(out["docs"]) == alone and paused.empty()  # not searched again


def test_an_index_edited_during_every_search_is_a_clear_error(fake_model: str) -> None:
    corpus, op = _toy(fake_model)
    r = RagkitRetriever(pipeline=op, k=5)
    paused, go = _paused(op)
    out: dict[str, Any] = {}

    def call() -> None:
        try:
            r.invoke(corpus.texts[3])
        except DataError as e:
            out["error"] = e

    th = threading.Thread(target=call)
    th.start()
    for n in range(5):  # each search, paused, sees one document removed and put back at the end
        paused.get(timeout=30)
        victim = corpus.ids[n]
        op.remove([victim])
        op.add(corpus.subset(corpus.row_of([victim])))
        go.put(1)
    th.join(30)
    msg = str(out.get("error"))
    assert "documents changed during each of 5 searches of 1 query" in msg and "add / remove on another thread" in msg
    assert paused.empty()


def _documents(corpus: Corpus, rows: range) -> list[Any]:
    from langchain_core.documents import Document

    return [Document(page_content=corpus.texts[i], id=corpus.ids[i], metadata={"n": i}) for i in rows]


def test_concurrent_add_documents_all_land_and_a_duplicate_once(scifact_slice: Any) -> None:
    """Four threads adding 20 documents each at once lost some (BM25's add read and wrote its matrices
    unguarded: 300 of 400 indexed, or every later search failing); two adding one id both passed the
    duplicate check. Edits through one retriever now hold it alone."""
    from ragkit.pipelines import Parallel

    corpus, queries = scifact_slice

    def hybrid() -> Parallel:
        return Parallel([BM25(k=10), BM25(k=10, k1=1.5)], fuse=RRF())

    r = RagkitRetriever(pipeline=hybrid(), corpus=_documents(corpus, range(100)), k=5)
    with switching_often():
        errors = in_threads(lambda t: r.add_documents(_documents(corpus, range(100 + 20 * t, 120 + 20 * t))), n=4)
    assert not errors, errors
    assert sorted(r._searched_corpus().ids.tolist()) == sorted(corpus.ids[:180].tolist())
    fresh = RagkitRetriever(pipeline=hybrid(), corpus=_documents(corpus, range(180)), k=5)
    assert {d.id for d in r.invoke(queries[0])} == {d.id for d in fresh.invoke(queries[0])}
    twice = _documents(corpus, range(180, 181))
    with switching_often():
        errors = in_threads(lambda t: r.add_documents(twice), n=2)
    assert sum(errors.values()) == 1 and "already indexed" in next(iter(errors))
    assert r._searched_corpus().ids.tolist().count(corpus.ids[180]) == 1


def test_a_search_during_delete_answers_from_the_documents_before_or_after(scifact_slice: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """BM25.remove swaps in the new corpus before its weights: a search in between ranked the old rows
    and named them with the new corpus's documents (other documents, the right scores). A delete through
    the retriever now waits for the searches inside it, and searches wait for the delete."""
    corpus, queries = scifact_slice
    r = RagkitRetriever(pipeline=BM25(k=10), corpus=_documents(corpus, range(150)), k=5)
    gone = [corpus.ids[i] for i in range(3)]
    after = RagkitRetriever(pipeline=BM25(k=10), corpus=_documents(corpus, range(3, 150)), k=5)
    weighing, real = threading.Event(), BM25._weigh

    def slow(self: BM25) -> None:
        weighing.set()
        time.sleep(0.3)  # the delete's corpus is new, its weights still old
        real(self)

    monkeypatch.setattr(BM25, "_weigh", slow)
    th = threading.Thread(target=r.delete, args=(gone,))
    th.start()
    assert weighing.wait(30)
    during = r.invoke(queries[1])
    th.join(30)
    monkeypatch.undo()
    assert _key(during) == _key(after.invoke(queries[1]))


def test_searches_during_add_documents_never_fail(scifact_slice: Any) -> None:
    """A search while add_documents ran raised a bare 'matmul: dimension mismatch' (BM25's vocabulary
    grows before its weights), and a hybrid's 'dense searches 300 documents and bm25 330 other ones'."""
    from ragkit.pipelines import Parallel

    corpus, queries = scifact_slice
    pipe = Parallel([BM25(k=20), BM25(k=20, k1=1.5)], fuse=RRF())
    r = RagkitRetriever(pipeline=pipe, corpus=_documents(corpus, range(60)), k=5)
    done = threading.Event()
    failures: list[str] = []

    def search() -> None:
        while not done.is_set():
            try:
                r.invoke(queries[2])
            except Exception as e:  # noqa: BLE001 - counted
                failures.append(f"{type(e).__name__}: {e}"[:200])

    threads = [threading.Thread(target=search) for _ in range(3)]
    with switching_often():
        for th in threads:
            th.start()
        for a in range(60, len(corpus), 20):
            r.add_documents(_documents(corpus, range(a, min(a + 20, len(corpus)))))
        done.set()
        for th in threads:
            th.join(30)
    assert failures == [] and len(r._searched_corpus()) == len(corpus)


# ------------------------------------------------------------------ the encoders' shared caches
def _vec(t: str) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(t.encode()).digest(), np.uint8)[:8].astype(np.float32)


def test_embedding_cache_reader_shared_by_threads(tmp_path: Path) -> None:
    """One reader per model is shared by every encoder (and so every serving thread, with query caching
    on): ``put`` numbered a new shard ``len(_shards)`` before reading it back, so two writers at once gave
    their rows one number (another text's vector, or an IndexError); a first load raced the same way."""
    def compute(texts: list[str]) -> np.ndarray:
        return np.stack([_vec(t) for t in texts])

    cache = EmbeddingCache(tmp_path, "model-x")
    cache.fetch_or_compute(["warm"], compute)  # loaded: later puts extend the in-memory index
    wrong: list[str] = []

    def write(t: int) -> None:
        for j in range(60):
            texts = [f"t{t}-{j}-{i}" for i in range(3)] + [f"t{(t + 1) % N_THREADS}-{j}-0"]
            out, _ = cache.fetch_or_compute(texts, compute)
            wrong.extend(x for i, x in enumerate(texts) if not np.array_equal(out[i], _vec(x)))

    with switching_often():
        errors = in_threads(write)
        assert not errors and not wrong, (errors, wrong[:5])
        fresh = EmbeddingCache(tmp_path, "model-x")  # first load, by every thread at once

        def read(t: int) -> None:
            texts = [f"t{t}-{j}-{i}" for j in range(60) for i in range(3)]
            out, n = fresh.fetch_or_compute(texts, compute)
            assert n == 0
            wrong.extend(x for i, x in enumerate(texts) if not np.array_equal(out[i], _vec(x)))

        errors = in_threads(read)
    assert not errors and not wrong, (errors, wrong[:5])


def _fake_tokens(texts: list[str], progress: bool = False) -> TokenVectors:
    mats = [np.tile(_vec(t)[:4], (1 + len(t) % 3, 1)).astype(np.float16) for t in texts]
    off = np.zeros(len(texts) + 1, np.int64)
    np.cumsum([len(m) for m in mats], out=off[1:])
    return TokenVectors(np.concatenate(mats), off)


@pytest.fixture
def token_encoder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> TokenEncoder:
    """A token encoder whose model is a fast deterministic stand-in, caching under ``tmp_path``."""
    enc = TokenEncoder()
    monkeypatch.setattr(enc, "_forward", _fake_tokens)
    monkeypatch.setattr(TokenEncoder, "dim", property(lambda self: 4))
    enc._cache = TokenCache(tmp_path, enc.key)
    return enc


def test_token_cache_shared_by_threads(tmp_path: Path) -> None:
    """A ``put`` drops the token cache's index and the next ``get`` re-reads it, numbering the shards
    anew: a ``get`` on another thread meanwhile read its numbers in the emptied or refilled list
    (IndexError, or another text's token vectors)."""
    from ragkit.encoders.cache import text_digests

    cache = TokenCache(tmp_path, "model-x|tokens")
    base = [f"base {i}" for i in range(50)]
    for i in range(0, 50, 5):
        cache.put(text_digests(base[i:i + 5]), _fake_tokens(base[i:i + 5]))
    wrong: list[str] = []

    def work(t: int) -> None:
        for j in range(40):
            if t % 2:  # writers: new shards of growing size, so a reload numbers the old ones anew
                new = [f"new {t}-{j}-{i}" for i in range(1 + j % 7)]
                cache.put(text_digests(new), _fake_tokens(new))
            qs = [base[(t * 7 + j + i) % 50] for i in range(4)]
            parts, hit = cache.get(text_digests(qs))
            assert hit.all()
            for pos, tv in parts:
                wrong.extend(qs[p] for i, p in enumerate(pos) if not np.array_equal(tv[i], _fake_tokens([qs[p]])[0]))

    with switching_often():
        errors = in_threads(work)
    assert not errors and not wrong, (errors, wrong[:5])


def test_token_query_memo_shared_by_threads(token_encoder: TokenEncoder) -> None:
    """The query memo (shared by muvera and maxsim, and by every serving thread) was popped and trimmed
    without a lock: KeyError, or ``dictionary changed size during iteration``, once it was full."""
    token_encoder.memo_size = 8
    texts = [f"query {i}" for i in range(24)]
    wrong: list[str] = []

    def work(t: int) -> None:
        rng = np.random.default_rng(t)
        for _ in range(400):
            qs = [texts[i] for i in rng.integers(0, len(texts), 3)]
            tv = token_encoder.encode_queries(qs)
            wrong.extend(x for i, x in enumerate(qs) if not np.array_equal(tv[i], _fake_tokens([x])[0]))

    with switching_often(1e-6):
        errors = in_threads(work)
    assert not errors and not wrong, (errors, wrong[:5])
    assert len(token_encoder._memo) <= 8


def test_token_query_memo_keeps_a_hit_while_another_thread_encodes(token_encoder: TokenEncoder,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A hit was popped from the memo and put back only after the call's misses were encoded: a thread
    asking for it meanwhile encoded it again, in another batch (other padding, other last digits), so a
    served MUVERA pipeline scored one query two ways (a CI failure of the test above with MiniLM).  Also,
    two threads encoding one new text keep the first one's vectors."""
    token_encoder.encode_queries(["warm"])
    inside, go = threading.Event(), threading.Event()
    forward = token_encoder._forward
    encoded: list[list[str]] = []

    def slow(texts: list[str], progress: bool = False) -> TokenVectors:
        encoded.append(list(texts))
        if len(encoded) == 1:  # the first thread's "new", held until the main thread is done
            inside.set()
            assert go.wait(10)
        return forward(texts)

    monkeypatch.setattr(token_encoder, "_forward", slow)
    first = threading.Thread(target=token_encoder.encode_queries, args=(["warm", "new"],))
    first.start()
    assert inside.wait(10)
    token_encoder.encode_queries(["warm"])  # the other thread is encoding "new": "warm" is still a hit
    mine = token_encoder.encode_queries(["new"])[0]  # and "new" is encoded here too (not yet in the memo)
    go.set()
    first.join(10)
    assert encoded == [["new"], ["new"]], encoded
    np.testing.assert_array_equal(token_encoder.encode_queries(["new"])[0], mine)


def test_ainvoke_from_many_event_loop_tasks(scifact_slice: Any) -> None:
    """ainvoke runs in executor threads: 40 tasks gathered at once answer as 40 sequential invokes."""
    corpus, queries = scifact_slice
    r = RagkitRetriever(pipeline=BM25(k=20).fit(corpus), k=5)
    ref = [_key(r.invoke(q)) for q in queries[:40]]

    async def main() -> list[list[Any]]:
        return await asyncio.gather(*(r.ainvoke(q) for q in queries[:40]))

    with ThreadPoolExecutor(4) as pool:  # and from several event loops on their own threads
        runs = list(pool.map(lambda _: [_key(d) for d in asyncio.run(main())], range(4)))
    assert all(run == ref for run in runs)


def test_threads_asking_for_one_token_encoder_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """``get_token_encoder`` checked and filled its table without a lock: threads starting at once
    (a served MUVERA pipeline's first requests) each built an encoder, with its own query memo and
    cache reader."""
    from ragkit.encoders import tokens

    monkeypatch.setattr(tokens, "_TOKEN_ENCODERS", {})
    real = tokens.TokenEncoder.__init__

    @functools.wraps(real)  # (its signature kept: get_token_encoder checks keywords against it, which alone failed)
    def slow_init(self: TokenEncoder, *a: object, **kw: object) -> None:
        time.sleep(0.01)  # the model's fingerprint is read here: long enough for the others to ask
        real(self, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(tokens.TokenEncoder, "__init__", slow_init)
    got: list[TokenEncoder] = []
    errors = in_threads(lambda t: got.append(tokens.get_token_encoder(batch_size=7)))
    assert not errors and len(got) == N_THREADS and len({id(e) for e in got}) == 1


def test_two_retrievers_over_one_pipeline_share_its_lock(scifact_slice: Any) -> None:
    """Two retrievers wrapping one fitted pipeline (another k) each had a lock of their own, so adds
    through both at once raced (a dense index left with 645 documents and 585 slots for 650 vectors)."""
    corpus, queries = scifact_slice
    r1 = RagkitRetriever(pipeline=BM25(k=10), corpus=_documents(corpus, range(100)), k=5)
    r2 = RagkitRetriever(pipeline=r1.pipeline, k=3)
    assert r1._lock is r2._lock
    assert RagkitRetriever(pipeline=BM25(k=10), corpus=_documents(corpus, range(10)), k=5)._lock is not r1._lock
    with switching_often():
        errors = in_threads(lambda t: (r1, r2)[t % 2].add_documents(
            _documents(corpus, range(100 + 25 * t, 125 + 25 * t))), n=4)
    assert not errors, errors
    assert sorted(r1._searched_corpus().ids.tolist()) == sorted(corpus.ids[:200].tolist())
