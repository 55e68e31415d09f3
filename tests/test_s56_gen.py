"""Session 56's generator fixes: a chunk reused in a prompt that spills it keeps its reuse on disk, the
``chunk_cache`` argument and the settings it overrides are checked at construction, and ``prefill`` checks its
prompt's type, token ids and flags before any model work."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from test_generate_s54 import A, _tiny_model

from ragkit.caches import ChunkKVCache, ChunkVariant
from ragkit.caches.chunk_kv import _file_ident
from ragkit.errors import ParamError


def _var(n: int = 4, start: int = 5) -> ChunkVariant:
    k = torch.randn(2, 1, n, 4)
    return ChunkVariant(keys=k, values=k.clone(), start=start, token_scores=np.zeros(n, np.float32), sys_id="s")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("tiny") / "llama", "llama")


# ---------------------------------------------------------------- 1. a reuse recorded after its variant was spilled
def test_a_reuse_of_a_variant_spilled_after_its_lookup_reaches_its_file(tmp_path):
    """Old code: the reuse went to the spilled object only; its file kept reuse 0, cfo_n 0."""
    one = _var().nbytes
    c = ChunkKVCache("m", "t", budget_bytes=one, disk_dir=tmp_path)
    c.put("a" * 40, _var())
    v = c.lookup("a" * 40, n_tokens=4)[0]
    c.put("b" * 40, _var())  # the same prompt stores a missed chunk: "a" is spilled
    assert not any(x is v for x in c._mem.get("a" * 40, []))
    c.touch(v, 0.25)
    c.flush()
    w = ChunkKVCache("m", "t", disk_dir=tmp_path).lookup("a" * 40, n_tokens=4)[0]
    assert w.cfo_n == 1 and w.cfo_sum == 0.25 and w.reuse > 0.9


def test_a_reuse_of_a_variant_read_back_meanwhile_goes_to_the_copy_in_memory(tmp_path):
    one = _var().nbytes
    c = ChunkKVCache("m", "t", budget_bytes=one, disk_dir=tmp_path)
    c.put("a" * 40, _var())
    v = c.lookup("a" * 40, n_tokens=4)[0]
    c.put("b" * 40, _var())  # "a" spilled
    again = c.lookup("a" * 40, n_tokens=4)[0]  # read back ("b" spilled)
    assert again is not v
    c.touch(v, 0.5)
    assert again.cfo_n == 1 and again.dirty


def test_a_reuse_of_a_variant_dropped_from_the_store_writes_no_file(tmp_path):
    c = ChunkKVCache("m", "t", max_variants=1, disk_dir=tmp_path)
    c.put("a" * 40, _var(start=5))
    v = c.lookup("a" * 40, n_tokens=4)[0]
    c.put("a" * 40, _var(start=9))  # another context; max_variants=1: v is dropped, its file too
    c.touch(v, 0.0)
    assert [p.stem for p in (tmp_path / ("a" * 40)).glob("*.safetensors")] == []


def _spilled(tmp_path, **kw):
    """A store of one variant's budget, and the variant of "a" a lookup returned, spilled by a put of "b"."""
    one = _var().nbytes
    c = ChunkKVCache("m", "t", budget_bytes=one, disk_dir=tmp_path, **kw)
    c.put("a" * 40, _var())
    v = c.lookup("a" * 40, n_tokens=4)[0]
    c.put("b" * 40, _var())
    assert not any(x is v for x in c._mem.get("a" * 40, []))
    return c, v


def test_a_reuse_rewrite_keeps_the_files_mode(tmp_path):
    """The file replaced by a reuse's rewrite was set aside before atomic_file gave the new one its mode (and
    flushed it), so a chmod 600 file came back with the umask's mode, and the old one was away for the flush."""
    c, v = _spilled(tmp_path)
    f = tmp_path / ("a" * 40) / f"{v.file_stem}.safetensors"
    os.chmod(f, 0o600)
    v.disk_ident = _file_ident(f)  # (the chmod changed no identity field the rewrite checks; read it again)
    c.touch(v, 0.25)
    got = ChunkKVCache("m", "t", disk_dir=tmp_path).lookup("a" * 40, n_tokens=4)[0]
    assert got.cfo_n == 1  # rewritten
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600


def test_a_reuse_of_a_spilled_variant_leaves_a_file_replaced_since_as_it_is(tmp_path):
    """Old code: touch rewrote the file (it checked only that one was there): the newer variant of the same
    context, another store's, was overwritten with the spilled one's rows."""
    c, v = _spilled(tmp_path)
    other = ChunkKVCache("m", "t", disk_dir=tmp_path)
    newer = _var()
    other.put("a" * 40, newer)
    other.flush()
    f = tmp_path / ("a" * 40) / f"{v.file_stem}.safetensors"
    before = f.read_bytes()
    c.touch(v, 0.25)
    assert v.cfo_n == 1  # recorded on the object
    assert f.read_bytes() == before
    got = ChunkKVCache("m", "t", disk_dir=tmp_path).lookup("a" * 40, n_tokens=4)[0]
    assert torch.equal(got.keys, newer.keys) and got.cfo_n == 0


def test_a_reuse_of_a_spilled_variant_whose_file_was_deleted_writes_none(tmp_path):
    c, v = _spilled(tmp_path)
    f = tmp_path / ("a" * 40) / f"{v.file_stem}.safetensors"
    f.unlink()  # another store's trim
    c.touch(v, 0.25)
    assert not f.exists()


def test_a_rewrite_over_a_file_replaced_or_deleted_as_it_is_written_leaves_it(tmp_path):
    """The identity is checked again as the new file is renamed in (a file replaced, or trimmed, between
    touch's check and the rename): nothing is written, no temporary file is left."""
    c, v = _spilled(tmp_path)
    f = tmp_path / ("a" * 40) / f"{v.file_stem}.safetensors"
    stale = v.disk_ident
    other = ChunkKVCache("m", "t", disk_dir=tmp_path)
    other.put("a" * 40, _var())
    other.flush()
    before = f.read_bytes()
    assert not c._write_disk("a" * 40, v, only_over=stale)
    assert f.read_bytes() == before
    f.unlink()
    assert not c._write_disk("a" * 40, v, only_over=stale)
    assert sorted(p.name for p in f.parent.iterdir()) == []


def test_a_reuse_rewrite_counts_the_size_difference_in_the_disk_estimate(tmp_path):
    """Old code: the rewrite of an existing file added its whole size: the estimate grew by a file per reuse."""
    c, v = _spilled(tmp_path, disk_budget_bytes=10**9)
    for i in range(3):
        c.touch(v, 0.25)
    assert v.cfo_n == 3 and not v.dirty
    real = sum(f.stat().st_size for f in tmp_path.glob("*/*.safetensors"))
    assert c._disk_bytes == real


def test_a_variant_read_from_disk_without_room_has_its_reuse_written_once_per_touch(tmp_path):
    """A variant that never fits in memory (read from disk each time) keeps its reuses on disk."""
    big = ChunkKVCache("m", "t", disk_dir=tmp_path)
    big.put("a" * 40, _var())
    big.flush()
    c = ChunkKVCache("m", "t", budget_bytes=1, disk_dir=tmp_path)
    for i in range(2):
        v = c.lookup("a" * 40, n_tokens=4)[0]
        assert not c._mem
        c.touch(v, 0.5)
    got = ChunkKVCache("m", "t", disk_dir=tmp_path).lookup("a" * 40, n_tokens=4)[0]
    assert got.cfo_n == 2 and got.cfo_sum == 1.0


def test_the_generator_records_the_reuse_of_a_chunk_its_own_prompt_spills(tiny, tmp_path):
    """Old code: A, reused in each prompt and spilled by the new chunk stored in it, read back reuse 0, cfo_n 0."""
    from ragkit.generators.local import LocalGenerator

    probe = LocalGenerator(tiny, max_chunk_tokens=64).load()
    seg = probe.segments("q?", [A[0]])
    c = probe.model.config
    head = c.hidden_size // c.num_attention_heads
    per = len(seg.chunks[0]) * c.num_hidden_layers * c.num_key_value_heads * head * 8  # float32 keys and values
    gen = LocalGenerator(tiny, max_chunk_tokens=64, disk_dir=str(tmp_path), cache_budget_bytes=int(per * 1.5)).load()
    gen.generate("q?", [A[0]], mode="naive", max_new_tokens=1)
    for i in range(2):
        gen.generate("q?", [A[0], f"{A[1]} {i}"], mode="naive", max_new_tokens=1)
    gen._store.flush()
    key = gen._store.key(seg.chunks[0])
    got = ChunkKVCache(gen.model_id_, gen.tokenizer_id_, disk_dir=str(tmp_path)).lookup(key)
    assert sum(v.cfo_n for v in got) == 2


# ---------------------------------------------------------------- 2. chunk_cache is a store
@pytest.mark.parametrize("bad", [{"not": "a store"}, "cache", 0])
def test_a_chunk_cache_that_is_no_store_is_refused_at_construction(bad):
    """Old code: accepted; load() failed with AttributeError after loading the model."""
    from ragkit.generators.local import LocalGenerator

    with pytest.raises(ParamError, match=r"chunk_cache=.*expected a ragkit.caches.ChunkKVCache") as e:
        LocalGenerator(chunk_cache=bad)  # type: ignore[arg-type]
    assert e.value.path == "chunk_cache"


# ---------------------------------------------------------------- 3. the store's own settings beside chunk_cache
@pytest.mark.parametrize(("kw", "named"), [
    ({"storage_dtype": "float16"}, ["storage_dtype='float16'"]),
    ({"storage_dtype": "fp16", "disk_dir": "/tmp/x"}, ["storage_dtype='fp16'", "disk_dir='/tmp/x'"]),
    ({"disk_dir": "d", "disk_budget_bytes": 10, "disk_half_life_s": 5.0},
     ["disk_dir='d'", "disk_budget_bytes=10", "disk_half_life_s=5.0"]),
    ({"max_variants": 1}, ["max_variants=1"]),
])
def test_settings_of_the_created_store_are_refused_beside_chunk_cache(kw, named):
    """Old code: accepted and ignored (the store given kept its float32, its folder, its max_variants)."""
    from ragkit.generators.local import LocalGenerator

    store = ChunkKVCache("m", "t")
    with pytest.raises(ParamError, match="beside chunk_cache: .*the store given keeps its own") as e:
        LocalGenerator(chunk_cache=store, **kw)
    for name in named:
        assert name in str(e.value)
    assert e.value.path == named[0].split("=")[0]


def test_defaults_and_the_prefix_budget_are_accepted_beside_chunk_cache():
    from ragkit.generators.local import LocalGenerator

    store = ChunkKVCache("m", "t", storage_dtype="float16", max_variants=1)
    g = LocalGenerator(chunk_cache=store, storage_dtype="fp32", max_variants=3, cache_budget_bytes=1000,
                       disk_half_life_s=3600)
    assert g.prefix_cache.budget_bytes == 1000 and g.chunk_cache is store


# ---------------------------------------------------------------- 4. prefill's prompt: its type, then its token ids
@pytest.mark.parametrize(("seg", "named"), [
    ("What causes scurvy?", "seg"),
    (None, "seg"),
])
def test_a_prefill_of_no_prompt_segments_is_refused_before_the_model_loads(seg, named):
    """Old code: AttributeError ('str' object has no attribute 'ids'), after loading the model."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator("/nonexistent/model")  # a load would fail: the check comes first
    with pytest.raises(ParamError, match="expected a PromptSegments") as e:
        g.prefill(seg, "full")  # type: ignore[arg-type]
    assert e.value.path == named and g.model_ is None


@pytest.mark.parametrize(("parts", "named"), [
    (([1, 2], [[3], (4, 5)], [6]), "seg.chunks[1]"),
    (([1, 2], [[3]], [6.5]), "seg.question"),
    (([1, "x"], [[3]], [6]), "seg.system"),
])
def test_segments_that_are_no_lists_of_int_ids_are_refused(parts, named):
    from ragkit.generators.local import LocalGenerator, PromptSegments

    g = LocalGenerator("/nonexistent/model")
    with pytest.raises(ParamError, match=rf"{named.replace('[', '.').replace(']', '.')}=.*expected a list of int") as e:
        g.prefill(PromptSegments(*parts), "full")
    assert e.value.path == named


@pytest.mark.parametrize(("where", "bad"), [("chunks", -5), ("chunks", 10**6), ("question", 257)])
def test_token_ids_outside_the_vocabulary_are_refused_naming_the_segment(tiny, where, bad):
    """Old code: IndexError ('index out of range in self') from the embedding."""
    from ragkit.generators.local import LocalGenerator, PromptSegments

    g = LocalGenerator(tiny, max_chunk_tokens=64).load()
    seg = g.segments("q?", A)
    vocab = g.model.get_input_embeddings().num_embeddings
    assert vocab == 257
    parts = {"system": list(seg.system), "chunks": [list(seg.chunks[0]), list(seg.chunks[1]) + [bad]],
             "question": list(seg.question)}
    if where == "question":
        parts["chunks"] = [list(c) for c in seg.chunks]
        parts["question"] = [bad] + parts["question"]
    named = "seg.chunks[1]" if where == "chunks" else "seg.question"
    for mode in ("full", "cachecraft"):
        with pytest.raises(ParamError, match=rf"holds token id {bad}; expected ids from 0 to 256") as e:
            g.prefill(PromptSegments(**parts), mode)
        assert e.value.path == named


# ---------------------------------------------------------------- 5. prefill's flags
@pytest.mark.parametrize(("kw", "mode", "named", "why"), [
    ({"capture": "no"}, "full", "capture", "expected True or False"),
    ({"rerotate": 0}, "naive", "rerotate", "expected True or False"),
    ({"new_variants": None}, "cachecraft", "new_variants", "expected True or False"),
    ({"capture": True}, "prefix", "capture", "capture=True with mode 'prefix'; expected mode 'full'"),
    ({"capture": True}, "cachecraft", "capture", "capture=True with mode 'cachecraft'; expected mode 'full'"),
    ({"rerotate": False}, "full", "rerotate", "rerotate=False with mode 'full'"),
    ({"rerotate": False}, "prefix", "rerotate", "rerotate=False with mode 'prefix'"),
])
def test_prefill_flags_are_checked_before_any_model_work(kw, mode, named, why):
    """Old code: capture='no' captured (a truthy str), capture=True in prefix mode stored nothing, silently."""
    from ragkit.generators.local import LocalGenerator, PromptSegments

    g = LocalGenerator("/nonexistent/model")
    with pytest.raises(ParamError, match=why) as e:
        g.prefill(PromptSegments([1], [[2]], [3]), mode, **kw)
    assert e.value.path == named


def test_the_flags_a_benchmark_passes_every_mode_are_accepted(tiny):
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny, max_chunk_tokens=64).load()
    seg = g.segments("q?", A)
    g.prefill(seg, "full", capture=np.bool_(True), new_variants=False)
    for mode in ("prefix", "naive", "cachecraft"):
        g.prefill(seg, mode, new_variants=False)
    g.prefill(seg, "naive", rerotate=False)
