"""A generator pickles with its settings and loads its model again on first use.

Pickling a pipeline with a local ``generate`` step (or a LangChain retriever over one) failed,
``TypeError: cannot pickle '_thread.RLock' object``, loaded or not.
"""
from __future__ import annotations

import pickle

from test_cachecraft import TINY_Q, tiny  # noqa: F401

from ragkit import Corpus
from ragkit.retrievers import BM25

CHUNKS = ["Scurvy is caused by a lack of vitamin C.", "Citrus fruit holds vitamin C."]


def test_a_loaded_generator_pickles_and_answers_alike_after(tiny):  # noqa: F811
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0], max_chunk_tokens=64)
    again = pickle.loads(pickle.dumps(g))  # (not loaded)
    assert again.model_ is None
    want = g.generate(TINY_Q, CHUNKS, mode="full", max_new_tokens=4)
    copy = pickle.loads(pickle.dumps(g))  # loaded: the model is not in the pickle
    assert copy.model_ is None and copy.max_chunk_tokens == 64 and copy.model_name == g.model_name
    assert copy.generate(TINY_Q, CHUNKS, mode="full", max_new_tokens=4) == want
    assert again.generate(TINY_Q, CHUNKS, mode="cachecraft", max_new_tokens=4) == g.generate(
        TINY_Q, CHUNKS, mode="cachecraft", max_new_tokens=4)
    assert copy.model_ is g.model_  # (one loaded copy per process)


def test_a_pipeline_with_a_generate_step_pickles(tiny):  # noqa: F811
    from ragkit.generators.operator import Generate

    pipe = (BM25(k=2) | Generate(model=tiny[0], max_new_tokens=3)).fit(Corpus.from_texts(CHUNKS))
    before = pipe.search([TINY_Q])
    after = pickle.loads(pickle.dumps(pipe)).search([TINY_Q])
    assert after.values["answer"] == before.values["answer"] and len(before.values["answer"][0]) > 0


def test_first_calls_on_threads_load_once_and_share_one_chunk_cache(tiny, monkeypatch):  # noqa: F811
    """``load`` had no lock of its own: first calls on several threads each made a chunk cache, one of them kept."""
    import threading
    import time

    from ragkit.caches import ChunkKVCache
    from ragkit.generators import local

    made = []

    class Counted(ChunkKVCache):
        def __init__(self, *a, **kw):  # noqa: ANN002, ANN003
            time.sleep(0.2)  # (widens the window two unguarded loads met in)
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(local, "ChunkKVCache", Counted)
    g = local.LocalGenerator(tiny[0], max_chunk_tokens=64)
    threads = [threading.Thread(target=g.load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and g.chunk_cache is made[0]


def test_a_given_chunk_cache_keeps_its_settings_and_disk_tier_through_a_pickle(tiny, tmp_path):  # noqa: F811
    """A pickle dropped a chunk cache given to the generator: the copy used a new memory-only cache, without the
    disk tier the docstring promised."""
    from ragkit.caches import ChunkKVCache
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0], max_chunk_tokens=64).load()
    cache = ChunkKVCache(g.model_id_, g.tokenizer_id_, budget_bytes=1 << 20, max_variants=2, disk_dir=tmp_path / "kv")
    g.use_cache(cache)
    g.generate(TINY_Q, CHUNKS, mode="cachecraft", max_new_tokens=2)
    cache.flush()
    copy = pickle.loads(pickle.dumps(g))
    got = copy.chunk_cache
    assert got is not None and got is not cache
    assert (got.disk_dir, got.budget_bytes, got.max_variants) == (tmp_path / "kv", 1 << 20, 2)
    costs: list = []
    copy.generate(TINY_Q, CHUNKS, mode="cachecraft", max_new_tokens=2, on_prefill=costs.append)
    assert costs[0].chunks_reused == len(CHUNKS), costs  # found again on disk
