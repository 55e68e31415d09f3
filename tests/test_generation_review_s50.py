"""Review fixes of generation (review s50): a variant recomputed in full is no reuse of it, the chunk cache's
flush writes only what changed, decoding runs no pass past its last token, the GGUF file is fingerprinted once,
and the settings' checks are shared.

The tests use the tiny 4-layer checkpoints of ``tests/test_cachecraft.py`` (seconds).
"""

from __future__ import annotations

import pytest
from test_cachecraft import TINY_CHUNKS, TINY_Q, tiny  # noqa: F401


def test_a_variant_recomputed_in_full_is_not_counted_as_reused(tiny):  # noqa: F811
    """A variant whose rows were all recomputed (fraction=1.0 in another order) reused nothing: its reuse count,
    which ranks it for eviction, stayed 0 (it rose to 1, ranking it ~100x above a fresh exact variant)."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0]).load()
    a, b = TINY_CHUNKS[:2]
    g.prefill(g.segments(TINY_Q, [a, b]), "cachecraft", fraction=1.0)  # misses: A() and B(A) stored
    p = g.prefill(g.segments(TINY_Q, [b, a]), "cachecraft", fraction=1.0)  # both found, both recomputed in full
    assert p.chunk_fraction == [1.0, 1.0] and p.cost.chunks_reused == 0
    cache = g.chunk_cache
    ka, kb = (cache.key(g.segments(TINY_Q, [c]).chunks[0]) for c in (a, b))
    old = [v for v in cache.lookup(ka) if v.prefix_ids == ()] + [v for v in cache.lookup(kb) if v.prefix_ids == (ka,)]
    assert len(old) == 2
    assert [v.reuse for v in old] == [0.0, 0.0] and [v.cfo_n for v in old] == [0, 0]
    # a reuse that keeps rows is still counted
    q = g.prefill(g.segments(TINY_Q, [a, b]), "cachecraft", fraction=0.0)
    assert q.chunk_fraction == [0.0, 0.0] and q.cost.chunks_reused == 2
    assert [v.reuse for v in old] == [1.0, 1.0]


def _written(monkeypatch) -> list[str]:
    """The chunk-cache files written from now on (their key folders), counted at safetensors' save_file."""
    import safetensors.torch as st

    real, out = st.save_file, []

    def counted(tensors, path, metadata=None):
        out.append(metadata["key"])
        real(tensors, path, metadata=metadata)

    monkeypatch.setattr(st, "save_file", counted)
    return out


def test_a_flush_writes_only_the_variants_that_changed(tmp_path, monkeypatch):
    """Old code: every flush (Pipeline.save, the exit) wrote every in-memory variant again, up to the whole memory
    tier (1 GiB by default), though one lookup was all that had happened since the last."""
    import os

    from test_cachecraft import _variant

    from ragkit.caches import ChunkKVCache

    cache = ChunkKVCache("m", "t", disk_dir=tmp_path)
    for i in range(6):
        cache.put(f"k{i}", _variant(seed=i))
    written = _written(monkeypatch)
    cache.flush()
    assert sorted(written) == [f"k{i}" for i in range(6)]
    files = sorted(tmp_path.glob("k*/*.safetensors"))
    stamps = {f: (os.stat(f).st_ino, os.stat(f).st_mtime_ns) for f in files}
    written.clear()
    (v,) = cache.lookup("k0")
    cache.flush()  # a lookup changes no variant: nothing is written
    assert written == [] and {f: (os.stat(f).st_ino, os.stat(f).st_mtime_ns) for f in files} == stamps
    cache.touch(v, 0.2)  # a reuse: its file holds the count before it
    cache.put("k1", _variant(seed=11))  # the same context again: replaced
    cache.put("k9", _variant(seed=9))  # new
    cache.flush()
    assert sorted(written) == ["k0", "k1", "k9"]
    written.clear()
    cache.flush()
    assert written == []
    back = {k: ChunkKVCache("m", "t", disk_dir=tmp_path).lookup(k)[0] for k in ("k0", "k1")}
    assert back["k0"].cfo_n == 1 and back["k0"].cfo_sum == pytest.approx(0.2)  # (its reuse decays by the wall time)
    assert torch_equal(back["k1"].keys, _variant(seed=11).keys)


def test_a_variant_read_from_disk_is_written_again_only_once_reused(tmp_path, monkeypatch):
    from test_cachecraft import _variant

    from ragkit.caches import ChunkKVCache

    first = ChunkKVCache("m", "t", disk_dir=tmp_path)
    first.put("a", _variant(seed=1))
    first.put("b", _variant(seed=2))
    first.flush()
    second = ChunkKVCache("m", "t", disk_dir=tmp_path)
    written = _written(monkeypatch)
    (a,) = second.lookup("a")
    (b,) = second.lookup("b")
    second.flush()
    assert written == []
    second.touch(b, 0.0)
    second.flush()
    assert written == ["b"]
    written.clear()
    del second  # its memory tier holds nothing new: the write at its close writes nothing
    import gc

    gc.collect()
    assert written == []


def test_an_eviction_writes_no_variant_whose_file_holds_it(tmp_path, monkeypatch):
    """Old code: a variant read from disk and not reused was written again, the same bytes, each time the memory
    budget evicted it: plain lookups over a working set larger than the budget wrote a file per request."""
    from test_cachecraft import _variant

    from ragkit.caches import ChunkKVCache

    first = ChunkKVCache("m", "t", disk_dir=tmp_path)
    first.put("a", _variant(seed=1))
    first.put("b", _variant(seed=2))
    first.flush()
    second = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=int(1.5 * _variant().nbytes))
    written = _written(monkeypatch)
    for key in ("a", "b", "a", "b"):
        (v,) = second.lookup(key)
    assert written == [] and second.stats.spills == 0
    second.touch(v, 0.0)  # "b", reused: its file is behind it
    second.lookup("a")  # evicts "b", which is written
    assert written == ["b"] and second.stats.spills == 1
    (b,) = ChunkKVCache("m", "t", disk_dir=tmp_path).lookup("b")
    assert b.cfo_n == 1


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_decoding_runs_no_pass_after_its_last_token(tiny):  # noqa: F811
    """Old code: after the last token (max_new_tokens reached) decoding ran one more forward pass, whose logits were
    never read.  The answer is the one a greedy loop over the whole text gives, and the prefill's rows are left as
    they were (the cache decoding grows is not a clone of them any more: transformers' DynamicCache copies them)."""
    import torch

    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0]).load()
    g.eos_ids_ = set()  # a random model: it never stops by chance, and now never stops early
    seg = g.segments(TINY_Q, TINY_CHUNKS[:2])
    passes = [0]
    hook = g.model.register_forward_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    try:
        for mode in ("full", "prefix", "cachecraft"):
            pre = g.prefill(seg, mode, fraction=0.5)
            rows = [k.clone() for k in pre.keys], [v.clone() for v in pre.values]
            for n in (1, 2, 6):
                passes[0] = 0
                out = g.decode(pre, max_new_tokens=n)
                assert len(out) == n and passes[0] == n - 1, (mode, n, passes[0])
            assert all(torch.equal(a, b) for a, b in zip(rows[0] + rows[1], pre.keys + pre.values)), mode
    finally:
        hook.remove()
    ids = list(seg.ids())
    with torch.no_grad():
        for _ in range(6):  # greedy over the whole text each step, no cache
            ids.append(int(torch.argmax(g.model(input_ids=torch.tensor([ids])).logits[0, -1])))
    assert g.decode(g.prefill(seg, "full"), max_new_tokens=6) == ids[-6:]
    # a stop token ends it before a pass too: the passes are those that made the tokens kept and the stop token
    pre = g.prefill(seg, "full")
    g.eos_ids_ = {ids[len(seg) + 3]}
    passes[0] = 0
    hook = g.model.register_forward_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    try:
        assert g.decode(pre, max_new_tokens=6) == ids[len(seg):len(seg) + 3] and passes[0] == 3
    finally:
        hook.remove()


def test_a_prompt_already_in_the_prefix_cache_is_not_gathered_again(tiny, monkeypatch):  # noqa: F811
    """Old code: every prefix-mode prefill joined the whole prompt's rows of every layer (torch.cat) before
    PrefixCache.put found the prompt stored already and dropped them."""
    from ragkit.caches import PrefixCache
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0]).load()
    seg = g.segments(TINY_Q, TINY_CHUNKS)
    puts = []
    real = PrefixCache.put
    monkeypatch.setattr(PrefixCache, "put", lambda self, *a: (puts.append(a[2].shape), real(self, *a))[1])
    full = g.prefill(seg, "full")
    first = g.prefill(seg, "prefix")
    again = g.prefill(seg, "prefix")
    assert len(puts) == 1 and puts[0][2] == len(seg) - len(seg.question)  # the rows up to the last chunk
    assert again.chunk_fraction == [0.0, 0.0, 0.0] and first.chunk_fraction == [1.0, 1.0, 1.0]
    assert float((again.logits - full.logits).abs().max()) < 1e-4
    assert g.prefix_cache.holds(seg.ids(), [len(seg) - len(seg.question)])


def test_the_gguf_file_is_hashed_once_by_the_check_of_the_source_and_the_load(tmp_path, monkeypatch):
    """Old code: the load hashed the GGUF file itself (model_fingerprint), beside the memo the check of the source
    had filled: SmolLM2's 98 MB twice per ragkit ask."""
    from ragkit.encoders import sentence
    from ragkit.generators import _model_source as ms

    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 64)
    monkeypatch.setattr(sentence, "_RACY_NS", 0)  # (the file was written just now)
    calls: list[str] = []
    real = sentence.model_fingerprint
    monkeypatch.setattr(sentence, "model_fingerprint", lambda p: calls.append(p) or real(p))
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    read = []
    monkeypatch.setattr(ms, "_read_gguf_copy", lambda folder, fp: read.append(fp) or ("tokenizer", "model"))
    fp, _ = ms.source_fingerprint(str(f), None)
    loaded = ms._load_model(str(tmp_path), "m.gguf")
    assert loaded.fingerprint == fp == read[0] == real(str(f)) and (loaded.tokenizer, loaded.model) == ("tokenizer",
                                                                                                      "model")
    assert calls == [str(f)]


def test_a_gguf_rewritten_at_the_same_size_and_times_is_hashed_again(tmp_path, monkeypatch):
    """The GGUF's fingerprint is the encoders' cached_fingerprint now (one memo, where the generators kept one of
    their own): a file rewritten at the same size with its times put back is hashed again, not served its old
    hash."""
    import os

    from ragkit.generators import _model_source as ms

    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 64)
    st = os.stat(f)
    first = ms._local_fingerprint(str(tmp_path), "m.gguf")[0]
    f.write_bytes(b"GGUF" + b"\1" * 64)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ms._local_fingerprint(str(tmp_path), "m.gguf")[0] != first


def test_a_model_folder_is_hashed_once_while_unchanged(tiny, monkeypatch):  # noqa: F811
    """Old code: the fingerprint of a model folder hashed its weight files at every call (the check of the source,
    the generate step's fit, the load)."""
    from ragkit.encoders import sentence
    from ragkit.generators import _model_source as ms

    monkeypatch.setattr(sentence, "_RACY_NS", 0)  # (the tiny folder was written just now)
    calls: list[str] = []
    real = sentence.model_fingerprint
    monkeypatch.setattr(sentence, "model_fingerprint", lambda p: calls.append(p) or real(p))
    sentence._FINGERPRINTS.pop(tiny[1], None)
    first = ms.source_fingerprint(tiny[1], None)
    assert ms.source_fingerprint(tiny[1], None) == first and ms._local_fingerprint(tiny[1], None) == first
    assert first[0] == real(tiny[1]) and calls == [tiny[1]]


def test_the_budgets_are_checked_alike_everywhere():
    """One check of a byte budget (an int >= 0, numpy's too, not a bool; or None) and of a disk budget without a disk
    tier, in ChunkKVCache, PrefixCache and LocalGenerator: the same words, each naming where."""
    import numpy as np

    from ragkit.caches import ChunkKVCache, PrefixCache
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    for ok in (None, 0, 5, np.int64(5)):
        ChunkKVCache("m", "t", budget_bytes=ok)
        PrefixCache(ok)
        LocalGenerator(cache_budget_bytes=ok)
    for bad in (-1, True, np.bool_(True), 1.5, "1"):
        got = []
        for make in (lambda: ChunkKVCache("m", "t", budget_bytes=bad), lambda: PrefixCache(bad),
                     lambda: LocalGenerator(cache_budget_bytes=bad)):
            with pytest.raises(ParamError) as e:
                make()
            got.append(str(e.value).split(": ", 1))
        assert [w for w, _ in got] == ["ChunkKVCache", "PrefixCache", "LocalGenerator"]
        assert got[0][1] == got[1][1] == got[2][1].replace("cache_budget_bytes", "budget_bytes") == (
            f"budget_bytes={bad!r}; expected an int >= 0, or None for no budget")
    msgs = []
    for make in (lambda: ChunkKVCache("m", "t", disk_budget_bytes=10), lambda: LocalGenerator(disk_budget_bytes=10)):
        with pytest.raises(ParamError, match="disk_budget_bytes=10 limits the chunk cache's disk tier, but there is "
                                             r"none \(disk_dir=None\)") as e:
            make()
        msgs.append(str(e.value).split(": ", 1)[1])
    assert msgs[0] == msgs[1]
    for make in (lambda: ChunkKVCache("m", "t", disk_dir="x", disk_budget_bytes=-1),
                 lambda: LocalGenerator(disk_dir="x", disk_budget_bytes=-1)):
        with pytest.raises(ParamError, match=r": disk_budget_bytes=-1; expected an int >= 0, or None for no limit "
                                             "on the disk tier$"):
            make()


def test_an_empty_chunk_counts_as_reusing_nothing(tiny):  # noqa: F811
    """An empty chunk (a PromptSegments made by hand) had recompute share 0/1 in the reuse modes, so it counted as
    reused (PrefillCost took the smaller of that count and the cache hits: [empty, a hit recomputed in full] said
    1/2 chunks reused); its share is 1, as in modes full and prefix."""
    from ragkit.generators.local import LocalGenerator, PromptSegments

    g = LocalGenerator(tiny[0]).load()
    one = g.segments(TINY_Q, TINY_CHUNKS[:1])
    g.prefill(one, "cachecraft")  # stores the chunk alone
    seg = PromptSegments(one.system, [[], one.chunks[0]], one.question)
    for mode in ("full", "prefix"):
        assert g.prefill(seg, mode).chunk_fraction == [1.0, 1.0]
    p = g.prefill(seg, "cachecraft", fraction=1.0, selector="fixed", new_variants=False)  # another prefix: recomputed
    assert (p.hits, p.misses, p.chunk_fraction, p.cost.chunks_reused) == (1, 1, [1.0, 1.0], 0)
    p = g.prefill(seg, "naive")
    assert p.chunk_fraction == [1.0, 0.0] and p.cost.chunks_reused == 1
