"""A reviewer's findings on MUVERA (SciFact slice): token-cache growth per edit, damaged caches, parameters
that did nothing, and a mean channel that overflowed float32 at search."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import ragkit.encoders.tokens as tokens
from ragkit.encoders.tokens import TokenEncoder, TokenVectors
from ragkit.errors import ParamError


class Fake(TokenEncoder):
    """No model: text ``t`` has ``len(t) % 5 + 1`` tokens of 4 dimensions, drawn from its length and characters
    (deterministic, unit rows), so cached and fresh vectors can be compared."""

    dim = 4  # type: ignore[assignment]

    def _forward(self, texts: list[str], progress: bool = False) -> TokenVectors:
        n = np.array([len(t) % 5 + 1 for t in texts], np.int64)
        rows = [np.random.default_rng([len(t), sum(map(ord, t))]).standard_normal((k, 4)) for t, k in zip(texts, n)]
        data = np.concatenate(rows) if rows else np.zeros((0, 4))
        data /= np.linalg.norm(data, axis=1, keepdims=True)
        return TokenVectors(data.astype(np.float16), np.r_[0, np.cumsum(n)])


def _same(got: TokenVectors, want: TokenVectors) -> bool:
    return np.array_equal(got.offsets, want.offsets) and np.array_equal(np.asarray(got.data), np.asarray(want.data))


def _stored(folder) -> tuple[int, int]:
    """(texts, token rows) held by the shards of a token-cache folder."""
    texts = rows = 0
    for keys in folder.glob("*.keys.npy"):
        texts += len(np.load(keys))
        rows += len(np.load(str(keys).replace(".keys.npy", ".npy"), mmap_mode="r"))
    return texts, rows


# ------------------------------------------------------------------------------ 1. cache growth per edit
def test_an_edit_grows_the_token_cache_by_the_edited_texts_only(tmp_path, monkeypatch):
    """Each refit after a one-word edit wrote another full copy of the corpus's token vectors (a corpus above
    CONSOLIDATE_BYTES is written as one shard; the older shards were never removed): 400 SciFact documents,
    fit + 3 edit-refits, 140 -> 349 MB.  The former versions of the corpus are retired now, their other
    texts (the documents as they were before the edit) kept: each edit adds its new and former version of
    the edited document, and every version still reads back."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(tokens, "CONSOLIDATE_BYTES", 1)  # every corpus is written as one shard
    texts = [f"document {i} " + "word " * (i % 7) for i in range(60)]
    Fake().encode(texts)
    (folder,) = (tmp_path / "tokens").iterdir()
    assert _stored(folder)[0] == 60
    versions = [texts]
    reader = Fake()  # a reader that keeps its index (and maps) while others retire shards
    held = reader.encode(texts)
    for i in range(3):
        edited = list(texts)
        edited[10 + i] += f" edit {i}"
        versions.append(edited)
        enc = Fake()  # a new reader each time, as a new process
        got = enc.encode(edited)
        assert enc.n_encoded == 1 and _same(got, Fake(cache=False).encode(edited))
    assert _stored(folder)[0] <= 60 + 2 * 3  # (old code: 4 copies of the corpus, 240)
    assert _same(held, Fake(cache=False).encode(texts))  # its map of a retired shard still reads (POSIX)
    assert _same(reader.encode(texts), Fake(cache=False).encode(texts))
    for v in versions:  # every version read back, nothing encoded again
        enc = Fake()
        assert _same(enc.encode(v), Fake(cache=False).encode(v)) and enc.n_encoded == 0
    # each former version read back is written whole once, retiring nothing (retiring there made switching
    # between two versions rewrite the corpus at every fit), and is read back whole from then on
    assert _stored(folder)[0] <= 60 + 2 * 3 + 3 * 60
    stored = _stored(folder)
    for v in versions:
        enc = Fake()
        assert _same(enc.encode(v), Fake(cache=False).encode(v)) and enc.n_encoded == 0
    assert _stored(folder) == stored


def test_a_shard_is_retired_only_in_favour_of_a_newer_one(tmp_path, monkeypatch):
    """Two processes that consolidated the same texts must not retire each other's shard (both would go):
    a shard is retired only by a newer one, by modification time then name, which every process sees alike."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    enc = Fake()
    texts = [f"text {i}" for i in range(20)]
    tv = Fake(cache=False).encode(texts)
    digests = tokens.text_digests(texts)
    store = enc.store
    a, _ = store._write(digests, tv.offsets, [(np.arange(20), tv, None)])
    b, _ = store._write(digests, tv.offsets, [(np.arange(20), tv, None)])
    assert a is not None and b is not None
    ta, tb = (store.folder / f"{n}.keys.npy" for n in (a, b))
    os.utime(ta, ns=(10**18, 10**18))
    os.utime(tb, ns=(2 * 10**18, 2 * 10**18))  # b is newer
    assert store.retire(a, digests) == [] and tb.exists()
    assert store.retire(b, digests) == [a] and not ta.exists()
    assert not (store.folder / f"{a}.npy").exists() and not (store.folder / f"{a}.offsets.npy").exists()
    fresh = Fake()
    assert _same(fresh.encode(texts), tv) and fresh.n_encoded == 0


def test_a_subset_and_its_corpus_keep_their_shards(tmp_path, monkeypatch):
    """A consolidated subset (a filtered corpus) does not retire the shard of the corpus it was gathered
    from, nor the reverse: both are read back whole afterwards, nothing rewritten."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(tokens, "CONSOLIDATE_BYTES", 1)
    texts = [f"text {i}" for i in range(40)]
    Fake().encode(texts)
    (folder,) = (tmp_path / "tokens").iterdir()
    enc = Fake()
    enc.encode(texts[:30][::-1])  # three quarters of it, in another order: a new shard, the whole one kept
    assert enc.n_encoded == 0 and _stored(folder)[0] == 70
    Fake().encode(texts[:36] + ["new"])  # a version of the 40 (36 of its 40, of the 37): it goes, its 4 other texts
    assert _stored(folder)[0] == 30 + 37 + 4  # saved apart; the 30 stay (30 of the 37 < 7/8): kept whole
    for v in (texts, texts[:30][::-1]):
        again = Fake()
        got = again.encode(v)
        assert again.n_encoded == 0 and _same(got, Fake(cache=False).encode(v))
    for _ in range(2):
        for v in (texts, texts[:30][::-1]):
            again = Fake()
            assert isinstance(again.encode(v).data, np.memmap) and again.n_encoded == 0
    n = len(list(folder.glob("*.keys.npy")))
    for v in (texts, texts[:30][::-1]):
        Fake().encode(v)
    assert len(list(folder.glob("*.keys.npy"))) == n  # read back whole: nothing written


def _count_writes(monkeypatch) -> list[int]:
    """Texts per shard written by any TokenCache from now on."""
    writes: list[int] = []
    write = tokens.TokenCache._write

    def counting(self, digests, offsets, parts):
        writes.append(len(digests))
        return write(self, digests, offsets, parts)

    monkeypatch.setattr(tokens.TokenCache, "_write", counting)
    return writes


@pytest.mark.parametrize("other", ["subset", "reversed", "undone"])
def test_switching_between_close_corpora_reads_each_back_whole(tmp_path, monkeypatch, other):
    """Fits alternating between a corpus and a close relative (a 90 % subset, the same texts in another order,
    an edit then undone) rewrote the whole corpus at every fit, each consolidation retiring the other version
    (200 texts written per fit, the folder 200 -> 300 texts over 6 cycles): a corpus gathered wholly from the
    cache retires nothing now, and each version is read back whole (0 written after the first cycle)."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(tokens, "CONSOLIDATE_BYTES", 1)
    full = [f"document {i} " + "w " * (i % 7) for i in range(200)]
    edited = list(full)
    edited[5] += " typo fixed"
    close = {"subset": full[:180], "reversed": full[::-1], "undone": edited}[other]
    writes = _count_writes(monkeypatch)
    per_fit = []
    for _ in range(4):
        for corpus in (full, close):
            writes.clear()
            enc = Fake()  # a new reader, as a new process
            assert _same(enc.encode(corpus), Fake(cache=False).encode(corpus))
            per_fit.append(sum(writes))
    (folder,) = (tmp_path / "tokens").iterdir()
    if other == "undone":  # the edit retires the first version (its old text kept), the undo writes it again
        assert per_fit == [200, 201, 200] + [0] * 5 and _stored(folder)[0] == 401
    else:
        assert per_fit == [200, len(close)] + [0] * 6 and _stored(folder)[0] == 200 + len(close)
    twice = list(full)
    twice[7] += " edit"  # an edit of both versions (of the edited one, 198 of 200): retires the two; doc 7 as
    writes.clear()       # it was is in both, saved once
    Fake().encode(twice)
    if other == "undone":  # (doc 7 saved twice before: 204)
        assert writes[0] == 200 and sum(writes) == 202 and _stored(folder)[0] == 200 + 1 + 2
    else:
        assert writes[0] == 200 and _stored(folder)[0] <= 200 + len(close) + 201


def _damage_the_shard(cache: Path) -> tuple[Path, Path]:
    """NaN in row 5 of the one token shard under ``cache``; returns (its folder, its data file)."""
    (folder,) = (cache / "tokens").iterdir()
    (data,) = [p for p in folder.glob("*.npy") if p.name.count(".") == 1]
    arr = np.load(data, mmap_mode="r+")
    arr[5, :] = np.nan
    arr.flush()
    del arr
    return folder, data


def test_a_damaged_shard_in_the_exact_match_slot_does_not_hide_its_sound_copy(tmp_path, monkeypatch):
    """A NaN-damaged shard next to a sound copy of the same texts whose name sorts last took the exact-match
    slot: whole() gave None once it failed the check, without looking again, so every new reader gathered the
    corpus from the sound copy and wrote it again (100 texts per fit; now 0 after the first)."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(tokens, "CONSOLIDATE_BYTES", 1)
    texts = [f"abstract number {i}" for i in range(100)]
    want = Fake(cache=False).encode(texts)
    Fake().encode(texts)
    folder, data = _damage_the_shard(tmp_path)
    for suffix in (".npy", ".offsets.npy", ".keys.npy"):  # its name sorts last: the index's choice among equals
        (folder / f"{data.name[:-4]}{suffix}").rename(folder / f"{'f' * 32}{suffix}")
    writes = _count_writes(monkeypatch)
    per_fit = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(4):
            writes.clear()
            enc = Fake()
            assert _same(enc.encode(texts), want)
            per_fit.append(sum(writes))
    assert per_fit == [100, 0, 0, 0]


def test_retire_reads_only_the_keys_of_shards_that_could_be_versions(tmp_path, monkeypatch):
    """retire() loaded the keys of every older shard at each consolidation (3000 one-text shards: 0.94 s of a
    2.2 s edit-refit); a shard of the loaded index whose size cannot share 7/8 of both is skipped unread."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(tokens, "CONSOLIDATE_BYTES", 1)
    store = Fake().store
    for i in range(20):
        store.put(tokens.text_digests([f"q{i}"]), Fake(cache=False).encode([f"q{i}"]))
    texts = [f"doc {i}" for i in range(80)]
    Fake().encode(texts)
    read: list[str] = []
    load = np.load

    def counting(file, *args, **kwargs):
        read.append(str(file))
        return load(file, *args, **kwargs)

    edited = list(texts)
    edited[3] += " x"
    enc = Fake()
    enc.store.whole(tokens.text_digests(edited))  # the index loaded, as encode does first
    monkeypatch.setattr(np, "load", counting)
    enc.encode(edited)
    monkeypatch.setattr(np, "load", load)
    keys_read = [f for f in read if f.endswith(".keys.npy")]
    assert len(keys_read) == 1  # the 80 texts' shard only (the new shard's keys are not read either)
    assert _stored(enc.store.folder)[0] == 20 + 80 + 1


# ------------------------------------------------------------------------------ 5. damaged token shard
def test_a_token_shard_holding_nan_is_set_aside_with_a_warning(tmp_path, monkeypatch):
    """A shard of the right size with NaN contents made the fit fail with "VectorIndex.build: the vectors
    contain NaN or infinite values", naming neither the cache nor the shard."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    texts = [f"abstract number {i}" for i in range(30)]
    want = Fake(cache=False).encode(texts)
    Fake().encode(texts)
    folder, data = _damage_the_shard(tmp_path)
    enc = Fake()
    with pytest.warns(RuntimeWarning, match=rf"{data.name}.*NaN or infinite.*encoded again"):
        got = enc.encode(texts)
    assert _same(got, want) and enc.n_encoded == 30
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per reader: the shard is not read again
        assert _same(enc.encode(texts[:3]), want.take([0, 1, 2])) and enc.n_encoded == 30
    for rows in ([0, 1, 2], np.arange(30)):  # a new reader: the shard encoded again serves (the damaged one
        again = Fake()                      # warned about if the index reaches it first: the two hold the same texts)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert _same(again.encode([texts[i] for i in rows]), want.take(rows))
        assert again.n_encoded == 0 and all(data.name in str(w.message) for w in seen)


def test_token_vectors_that_are_not_finite_are_never_cached(tmp_path, monkeypatch):
    """A model that outputs NaN: its vectors go to the caller (whose check names the encoder), not the cache."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))

    class Broken(Fake):
        def _forward(self, texts: list[str], progress: bool = False) -> TokenVectors:
            tv = super()._forward(texts)
            data = np.array(tv.data)
            data[0] = np.nan
            return TokenVectors(data, tv.offsets)

    out = Broken().encode(["a", "bb"])
    assert np.isnan(np.asarray(out.data, np.float32)).any()
    assert not list((tmp_path / "tokens").rglob("*.keys.npy"))


def test_all_finite_reads_in_steps_and_sees_every_kind_of_non_finite(monkeypatch):
    monkeypatch.setattr(tokens, "ASSEMBLE_BYTES", 64)  # several steps
    x = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float16)
    assert tokens.all_finite(x) and tokens.all_finite(x.astype(np.float32)) and tokens.all_finite(x[:0])
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[97, 3] = bad
        assert not tokens.all_finite(y) and not tokens.all_finite(y.astype(np.float32))


# ------------------------------------------------------------------------------ 4. damaged codebook cache
@pytest.mark.parametrize("damage", ["codes", "offsets"])
def test_a_codebook_cache_with_bad_values_is_rebuilt_with_a_warning(tmp_path, monkeypatch, damage):
    """codes.npy of the right size with out-of-range values surfaced as torch's "IndexError: index out of range
    in self" at search: the cache read checked shapes only."""
    import ragkit.retrievers.centroids as cen

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    rng = np.random.default_rng(2)
    lens = rng.integers(1, 12, 30)
    off = np.r_[0, np.cumsum(lens)]
    x = rng.standard_normal((off[-1], 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    first = cen.build_codes(x, off, 8, seed=3, cache_key="k1")
    (folder,) = (tmp_path / "codebooks").iterdir()
    if damage == "codes":
        codes = np.load(folder / "codes.npy")
        np.save(folder / "codes.npy", np.full_like(codes, np.iinfo(codes.dtype).max))
        match = r"codes\.npy holds codes .* outside the 8 centroids"
    else:
        o = np.load(folder / "code_offsets.npy")
        o[3], o[4] = o[4], o[3] - 1
        np.save(folder / "code_offsets.npy", o)
        match = "code_offsets.npy does not start at 0 or decreases"
    with pytest.warns(RuntimeWarning, match=rf"damaged codebook cache in .*{folder.name}: {match}.*rebuilt"):
        again = cen.build_codes(x, off, 8, seed=3, cache_key="k1")
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten: read back silently
        assert all(np.array_equal(a, b) for a, b in zip(first, cen.build_codes(x, off, 8, seed=3, cache_key="k1")))


def test_damaged_codes_names_what_is_wrong():
    from ragkit.retrievers.centroids import damaged_codes

    cb = np.eye(4, dtype=np.float32)
    assert damaged_codes(cb, np.array([0, 3, 1], np.uint16), np.array([0, 2, 3])) is None
    assert "outside the 4 centroids" in damaged_codes(cb, np.array([0, 4], np.uint16), np.array([0, 2]))
    assert "outside" in damaged_codes(cb, np.array([0, -1], np.int32), np.array([0, 2]))
    assert "decreases" in damaged_codes(cb, np.array([0, 1], np.uint16), np.array([0, 2, 1, 2]))
    assert "not integers" in damaged_codes(cb, np.array([0.0]), np.array([0, 1]))
    assert "NaN" in damaged_codes(cb * np.nan, np.array([0], np.uint16), np.array([0, 1]))


# ------------------------------------------------------------------------------ 2. parameters that do nothing
@pytest.mark.parametrize("kw,match", [
    (dict(rerank=False, candidates=5, k=10), r"candidates=5 has no effect without rerank"),
    (dict(rerank=False, ball_carve_tau=0.7), r"ball_carve_tau=0.7 has no effect without rerank"),
    (dict(projection="identity", d_proj=64), r"d_proj=64 has no effect without projection 'ams' or 'countsketch'"),
])
def test_muvera_refuses_parameters_that_do_nothing(kw, match):
    """Accepted silently before, against "a parameter that does nothing given the others is refused":
    without rerank the FDE search returns k (candidates unused) and no query is carved (ball_carve_tau only
    shapes the exact rerank's and prune's query tokens, and prune needs rerank); identity keeps the token
    dimension (d_proj unused)."""
    from ragkit.retrievers import Muvera

    with pytest.raises(ParamError, match=match):
        Muvera(**kw)


def test_muvera_accepts_the_defaults_spelled_out_and_still_names_prune():
    from ragkit.retrievers import Muvera

    Muvera(rerank=False, candidates=200, ball_carve_tau=None)  # the defaults, written out: accepted
    Muvera(projection="identity", d_proj=16)
    Muvera(rerank=True, candidates=50, k=10, ball_carve_tau=0.7)
    Muvera(projection="countsketch", d_proj=64)
    with pytest.raises(ParamError, match="prune needs rerank"):  # the more telling message first
        Muvera(k=10, candidates=50, prune=20, rerank=False)


def test_a_run_option_that_does_nothing_is_refused_too():
    from ragkit.options import check_options
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Muvera

    with pytest.raises(ParamError, match="candidates=500 has no effect without rerank"):
        check_options(Pipeline([Muvera(k=10, rerank=False)]), {"muvera": {"candidates": 500}})


def test_the_example_and_readme_muvera_configurations_still_validate():
    from ragkit.retrievers import Muvera

    Muvera(k=100, candidates=500)  # examples/learned.yaml
    Muvera(k=10, k_sim=2, projection="identity", r_reps=3, mean_weight=1, candidates=300, prune=80)  # README


# ------------------------------------------------------------------------------ 3. mean_weight overflow
def test_mean_weight_has_an_upper_bound_that_keeps_encodings_finite():
    """Muvera(mean_weight=1e37) validated and fitted, then search failed with "query vectors contain NaN or
    infinite values ... check the encoder's output" (float32 overflow of mean_weight * r_reps * token sum)."""
    from ragkit.retrievers import Muvera
    from ragkit.retrievers.fde import FDEConfig, fde_queries

    with pytest.raises(ParamError, match="mean_weight"):
        Muvera(mean_weight=1e37)
    with pytest.raises(ParamError, match="mean_weight"):
        FDEConfig(mean_weight=1e37)
    from ragkit.retrievers.fde import MAX_MEAN_WEIGHT
    Muvera(mean_weight=MAX_MEAN_WEIGHT)
    x = np.ones((2000, 8), np.float32) / np.sqrt(8)  # one long query of identical tokens: the largest sum
    cfg = FDEConfig(k_sim=0, d_proj=8, r_reps=50_000, mean_weight=MAX_MEAN_WEIGHT)
    q = fde_queries(x, np.array([0, 2000]), cfg)
    assert np.isfinite(q).all() and np.isfinite(q @ q.T).all()


# ------------------------------------------------------------------------------ 6. seeds, k_sim
def test_fde_config_and_muvera_agree_on_k_sim():
    """FDEConfig allowed k_sim up to 16, MuveraParams 12."""
    from ragkit.retrievers import Muvera
    from ragkit.retrievers.fde import MAX_K_SIM, FDEConfig

    FDEConfig(k_sim=MAX_K_SIM)
    Muvera(k_sim=MAX_K_SIM, d_proj=1, r_reps=1)
    with pytest.raises(ParamError, match="k_sim"):
        FDEConfig(k_sim=MAX_K_SIM + 1)
    with pytest.raises(ParamError, match="k_sim"):
        Muvera(k_sim=MAX_K_SIM + 1)


def test_the_seed_documents_that_adjacent_seeds_share_repetitions():
    """Seeds s and s + 1 share r_reps - 1 repetitions (default_rng(seed + r), as ALGORITHMS.md specifies):
    kept (saved indexes encode queries alike), and said where the seed is set."""
    from ragkit.retrievers.fde import FDEConfig, draw_matrices
    from ragkit.retrievers.muvera import MuveraParams

    g42, _ = draw_matrices(FDEConfig(k_sim=2, d_proj=4, r_reps=3, seed=42), 8)
    g43, _ = draw_matrices(FDEConfig(k_sim=2, d_proj=4, r_reps=3, seed=43), 8)
    assert np.array_equal(g42[:, 2:], g43[:, :4])
    assert "at least r_reps apart" in MuveraParams.model_fields["seed"].description


def test_shared_encoders_follow_the_cache_folder_in_force(tmp_path, monkeypatch):
    """get_encoder / get_token_encoder are shared by the process: their stores kept the $RAGKIT_CACHE of their
    first use, so after one test (or program part) set it, every later encode read and wrote there."""
    from ragkit.encoders.sentence import get_encoder
    from ragkit.encoders.tokens import get_token_encoder

    for enc in (get_encoder(), get_token_encoder()):
        monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "a"))
        assert (tmp_path / "a") in enc.store.folder.parents
        monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "b"))
        assert (tmp_path / "b") in enc.store.folder.parents
        monkeypatch.delenv("RAGKIT_CACHE")
        assert tmp_path not in enc.store.folder.parents


# ---------------------------------------------------------------- MUVERA at scale: fit memory, rerank, checks
def _token_sets(rng: np.random.Generator, n: int, lo: int, hi: int, d: int) -> TokenVectors:
    lens = rng.integers(lo, hi, n)
    x = rng.standard_normal((int(lens.sum()), d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return TokenVectors(x.astype(np.float16), np.r_[0, np.cumsum(lens)].astype(np.int64))


def _inject(monkeypatch, docs: TokenVectors, queries: TokenVectors | None = None) -> None:
    """The multi-vector operators read ``docs`` as the corpus's tokens (and ``queries`` as every batch's)."""
    from ragkit.retrievers.muvera import TokenOperatorMixin

    monkeypatch.setattr(TokenOperatorMixin, "_fit_tokens", lambda self, corpus, train=None: setattr(
        self, "tokens_", docs))
    if queries is not None:
        monkeypatch.setattr(TokenOperatorMixin, "query_tokens",
                            lambda self, state: queries.take(np.arange(len(state)) % len(queries)))


def _corpus(n: int):
    from ragkit.types import Corpus

    return Corpus(ids=np.array([f"d{i}" for i in range(n)]), texts=np.array([f"text {i}" for i in range(n)]))


@pytest.mark.parametrize("dtype", ["f32", "f16", "i8", "b1"])
def test_build_chunks_makes_the_index_build_makes(monkeypatch, dtype):
    """Muvera's fit streams the FDEs into the index chunk by chunk (VectorIndex.build_chunks); the index is the
    one build makes of the whole FDE matrix, code for code (i8: the same calibration, from the range of every
    vector), over many chunks."""
    import ragkit.retrievers.fde as fde
    from ragkit.retrievers._index import VectorIndex

    monkeypatch.setattr(fde, "CHUNK_BYTES", 1 << 16)  # many chunks
    docs = _token_sets(np.random.default_rng(3), 700, 0, 9, 8)
    cfg = fde.FDEConfig(k_sim=3, d_proj=4, r_reps=6, mean_weight=0.5)
    chunks = list(fde.fde_document_chunks(docs.data, docs.offsets, cfg))
    assert len(chunks) > 5
    whole = fde.fde_documents(docs.data, docs.offsets, cfg)
    ref = VectorIndex(dtype=dtype, metric="ip", search="exact").build(whole)
    got = VectorIndex(dtype=dtype, metric="ip", search="exact").build_chunks(
        len(docs), whole.shape[1], lambda: fde.fde_document_chunks(docs.data, docs.offsets, cfg))
    assert got.codes.dtype == ref.codes.dtype and np.array_equal(got.codes, ref.codes)
    if dtype == "i8":
        for a in ("i8_min", "i8_step", "i8_scale", "i8_fitted_n"):
            assert np.array_equal(getattr(got, a), getattr(ref, a)), a
    q = fde.fde_queries(docs.data[:30], np.array([0, 10, 30]), cfg)
    for a, b in zip(got.search(q, 20), ref.search(q, 20)):
        np.testing.assert_array_equal(a, b)


def test_build_chunks_of_a_graph_index_builds_it_as_before():
    """An HNSW graph (its insertion order clusters all the vectors) gathers the chunks and builds as before."""
    from ragkit.retrievers._index import VectorIndex

    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    parts = lambda: ((a, min(a + 64, 300), x[a:a + 64].copy()) for a in range(0, 300, 64))  # noqa: E731
    # (one thread: a graph built on several threads depends on their timing, so two builds may differ)
    got = VectorIndex(dtype="i8", metric="ip", search="hnsw", threads=1).build_chunks(300, 16, parts)
    ref = VectorIndex(dtype="i8", metric="ip", search="hnsw", threads=1).build(x)
    assert got.backend == "hnsw" and got.i8_scale == ref.i8_scale
    np.testing.assert_array_equal(got.search(x[:5], 10)[0], ref.search(x[:5], 10)[0])


def test_build_chunks_refuses_chunks_out_of_order_and_values_it_cannot_store():
    from ragkit.errors import DataError
    from ragkit.retrievers._index import VectorIndex

    x = np.ones((10, 4), np.float32)
    with pytest.raises(DataError, match="in order"):
        VectorIndex(search="exact").build_chunks(10, 4, lambda: iter([(0, 5, x[:5]), (6, 10, x[6:])]))
    with pytest.raises(DataError, match="hold 5 vectors, expected 10"):
        VectorIndex(search="exact").build_chunks(10, 4, lambda: iter([(0, 5, x[:5])]))
    with pytest.raises(DataError, match="NaN or infinite"):
        VectorIndex(search="exact").build_chunks(1, 4, lambda: iter([(0, 1, np.full((1, 4), np.nan))]))
    with pytest.raises(DataError, match="dtype='f16' holds values up to"):
        VectorIndex(search="exact", dtype="f16", metric="ip").build_chunks(1, 4, lambda: iter([(0, 1, x[:1] * 1e6)]))


@pytest.mark.parametrize("dtype, share", [("f16", 0.75), ("i8", 0.5)])
def test_muvera_fit_never_holds_the_float32_fde_matrix(monkeypatch, dtype, share):
    """fit built every document's FDE as one float32 matrix, which the index then converted whole: 3,000
    documents, the paper's 10,240-d FDE, traced peak 320.8 MiB for f16 and 395.3 MiB for i8 (the f32 matrix
    117.2 MiB, the f16 index 58.6, the i8 29.3); at 1M documents 41 GB + 20 GB for a 20 GB index.  The FDEs
    go into the index's storage chunk by chunk now: the fit peaks at the index and one chunk (small here)."""
    import tracemalloc

    import ragkit.retrievers.fde as fde
    from ragkit.retrievers import Muvera

    monkeypatch.setattr(fde, "CHUNK_BYTES", 1 << 20)
    docs = _token_sets(np.random.default_rng(5), 6000, 2, 6, 8)
    _inject(monkeypatch, docs)
    corpus = _corpus(len(docs))
    kw = dict(k=5, candidates=10, k_sim=4, d_proj=8, r_reps=12, fde_dtype=dtype, search="exact")
    f32_matrix = len(docs) * 12 * 2**4 * 8 * 4
    tracemalloc.start()
    try:
        op = Muvera(**kw).fit(corpus)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert op.index_.codes.nbytes <= f32_matrix / 2
    assert peak < share * f32_matrix, (peak / 2**20, f32_matrix / 2**20)  # (old code: 1.5x, 1.25x)


def test_a_rerank_reads_only_its_candidates_offsets(monkeypatch):
    """Each rerank call scanned the whole corpus's offsets (the monotonicity check and the lengths of every
    document, np.diff): 1 query x 100 candidates took 1.65 ms at 1k documents, 28.9 ms at 10M.  The offsets
    are checked where they are made (TokenVectors); a rerank reads the candidates' rows only."""
    from ragkit.retrievers.fde import chamfer_pairs

    rng = np.random.default_rng(2)
    n = 5_000_000
    data = np.ones((n, 2), np.float16)
    rows = np.sort(rng.choice(n, 100, replace=False))
    data[rows] = rng.standard_normal((100, 2)).astype(np.float16)
    off = np.arange(n + 1, dtype=np.int64)
    q = rng.standard_normal((3, 2)).astype(np.float32)
    qo = np.array([0, 3])
    sizes: list[int] = []
    real = np.diff
    monkeypatch.setattr(np, "diff", lambda a, *args, **kw: sizes.append(np.size(a)) or real(a, *args, **kw))
    got = chamfer_pairs(q, qo, data, off, rows[None, ::-1])
    assert max(sizes) < 1000  # (old code: two diffs of the 5M offsets)
    monkeypatch.setattr(np, "diff", real)
    small = chamfer_pairs(q, qo, data[rows], np.arange(101), np.arange(100)[None, ::-1])
    np.testing.assert_array_equal(got, small)


def test_a_rerank_still_refuses_candidate_spans_outside_the_tokens():
    """Offsets are no longer scanned whole at search, but a candidate's own span is checked."""
    from ragkit.errors import DataError
    from ragkit.retrievers.fde import chamfer_pairs

    data = np.ones((6, 2), np.float32)
    off = np.array([0, 4, 2, 6])  # document 1 runs backwards
    assert np.isfinite(chamfer_pairs(data[:1], np.array([0, 1]), data, off, np.array([[0, 2]]))).all()
    with pytest.raises(DataError, match="offsets of document 1 are \\[4, 2\\)"):
        chamfer_pairs(data[:1], np.array([0, 1]), data, off, np.array([[0, 1]]))


def test_maxsim_names_itself_and_refuses_negative_rows(monkeypatch):
    """maxsim: a row past its token store was refused by 'chamfer_pairs' (an internal function); a negative
    row other than the -1 padding (-7) was kept with score -inf, and corpus_ids[-7] named a wrong document."""
    from ragkit.errors import DataError
    from ragkit.filters import MaxSim
    from ragkit.types import Ranking, State

    rng = np.random.default_rng(4)
    _inject(monkeypatch, _token_sets(rng, 100, 1, 5, 8), _token_sets(rng, 2, 2, 4, 8))
    op = MaxSim().fit(_corpus(100))

    def state(rows):
        return State(queries=["a", "b"], rankings=[Ranking(np.array(r, np.int64), -np.arange(len(r), dtype=np.float32))
                                                   for r in rows])

    ok = op(state([[3, 1, 2], [5]]))
    assert sorted(ok.rankings[0].rows) == [1, 2, 3] and list(ok.rankings[1].rows) == [5]
    with pytest.raises(DataError, match="^maxsim: rows hold document 150, but there are 100 documents"):
        op(state([[3, 150], [5]]))
    with pytest.raises(DataError, match="^maxsim: rows hold -7"):
        op(state([[3, -7], [5]]))


def test_muvera_refuses_a_d_proj_wider_than_the_tokens(monkeypatch):
    """d_proj larger than the token dimension was accepted and only enlarged the FDE (a projection is for
    shrinking each bucket's block): refused at fit, as dense refuses a reduce wider than its model's vectors;
    before encoding where the model's width is known."""
    from ragkit.retrievers import Muvera

    rng = np.random.default_rng(6)
    _inject(monkeypatch, _token_sets(rng, 30, 1, 5, 8))
    with pytest.raises(ParamError, match="d_proj \\(16\\) is larger than the 8-d token vectors") as e:
        Muvera(k=5, candidates=10, k_sim=2, d_proj=16, r_reps=2).fit(_corpus(30))
    assert e.value.path == "muvera.d_proj"
    Muvera(k=5, candidates=10, k_sim=2, d_proj=8, r_reps=2).fit(_corpus(30))  # = the dimension: the identity

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded before the d_proj check")

    monkeypatch.setattr(TokenEncoder, "encode", no_encoding)
    from ragkit.retrievers.muvera import TokenOperatorMixin

    monkeypatch.setattr(TokenOperatorMixin, "_fit_tokens", no_encoding)
    with pytest.raises(ParamError, match="d_proj \\(500\\) is larger than the 384-d token vectors"):
        Muvera(k=5, candidates=10, k_sim=2, d_proj=500, r_reps=2).fit(_corpus(30))


# ------------------------------------------------------------------------------ review 2: f16 graph queries
def test_an_f16_graph_finds_queries_past_float16s_range():
    """An ``ip`` f16 graph cast each query to float16 as is: MUVERA's queries at a large mean_weight (~50 x it:
    above ~1,300) became inf and the search returned nothing, silently ('overflow encountered in cast').  Such a
    query is now shrunk by a power of two for the graph and its inner products scaled back; a query within
    float16's range is searched exactly as before."""
    from ragkit.retrievers._index import VectorIndex
    from ragkit.retrievers._quantize import F16_MAX

    rng = np.random.default_rng(11)
    x = rng.standard_normal((400, 16)).astype(np.float32)
    q = rng.standard_normal((3, 16)).astype(np.float32)
    # (graphs built on one thread: the same graph whatever the machine's load; built on several, a fresh-clone run
    # under load swapped the f32 graph's fourth and fifth results, and one more of them on 2026-12-07)
    f16 = VectorIndex(dtype="f16", metric="ip", search="hnsw", threads=1).build(x)
    f32 = VectorIndex(dtype="f32", metric="ip", search="hnsw", threads=1).build(x)
    assert f16.backend == "hnsw"
    rows, scores = f16.search(q, 5)
    for factor in (2.0 ** 17, 1e5, 3e7):
        big = q * np.float32(factor)
        big[1] = q[1]  # one query of the batch within range
        assert np.abs(big[0]).max() > F16_MAX
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no 'overflow encountered in cast'
            got_rows, got_scores = f16.search(big, 5)
        assert (got_rows >= 0).all() and np.isfinite(got_scores).all()
        # against another graph (the f32 one), the same results give or take one; against its own search of the
        # query unscaled, exactly when the factor is a power of two (the shrunk query is then the float16 query
        # times a power of two)
        assert all(len(set(g) & set(w)) >= 4 for g, w in zip(got_rows.tolist(), f32.search(big, 5)[0].tolist()))
        if factor == 2.0 ** 17:
            assert np.array_equal(got_rows, rows)
        assert np.allclose(got_scores[[0, 2]], scores[[0, 2]] * np.float32(factor), rtol=1e-3)
        assert np.array_equal(got_rows[1], rows[1]) and np.array_equal(got_scores[1], scores[1])  # unchanged


def test_an_f16_muvera_graph_at_a_large_mean_weight_finds_its_results(monkeypatch):
    from ragkit.retrievers import Muvera

    rng = np.random.default_rng(12)
    _inject(monkeypatch, _token_sets(rng, 200, 2, 12, 8), _token_sets(rng, 2, 30, 40, 8))
    kw = dict(k=10, candidates=20, k_sim=2, d_proj=8, r_reps=20, mean_weight=2000, search="hnsw")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = Muvera(fde_dtype="f16", **kw).fit(_corpus(200)).search(["a", "b"])
    want = Muvera(fde_dtype="f32", **kw).fit(_corpus(200)).search(["a", "b"])
    assert [len(r) for r in got.doc_ids] == [10, 10]  # (it found none above mean_weight ~1,300)
    # two graphs, each built on several threads: an approximate search may differ by a candidate under load (a
    # fresh-clone run swapped one of ten), so the f16 graph's results are the f32 graph's, give or take one
    assert all(len(set(g) & set(w)) >= 9 for g, w in zip(got.doc_ids, want.doc_ids))
    assert [r[0] for r in got.doc_ids] == [r[0] for r in want.doc_ids]


# ------------------------------------------------------------------------------ review 2: no retriever at fit
@pytest.mark.parametrize("text", ["pipeline: [maxsim: {}]", "pipeline: [{maxsim: {}}, {top_k: {k: 3}}]"])
def test_a_pipeline_without_a_retriever_is_refused_at_fit_before_encoding(monkeypatch, text):
    """``pipeline: [maxsim: {}]`` encoded the whole corpus's tokens at fit, and only search refused it ("this
    pipeline has no retriever"), whereas ``[maxsim, bm25]`` was refused at fit before any encoding."""
    from ragkit.filters import MaxSim, TopK
    from ragkit.pipelines import Pipeline
    from ragkit.pipelines.yaml import load_yaml
    from ragkit.retrievers.muvera import TokenOperatorMixin

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded the corpus")

    monkeypatch.setattr(TokenOperatorMixin, "_fit_tokens", no_encoding)
    for pipe in (load_yaml(text), Pipeline([MaxSim()])):
        with pytest.raises(ParamError, match=r"^this pipeline has no retriever \(its operators: maxsim"):
            pipe.fit(_corpus(5))
        assert not pipe.steps[0].is_fitted
    Pipeline([]).fit(_corpus(5))  # nothing to do at fit (no steps, or stateless ones): refused at search, as before
    Pipeline([TopK(k=3)]).fit(_corpus(5))


# ------------------------------------------------------------------------------ review 2: a model that cannot load
@pytest.mark.parametrize("make", ["maxsim", "maxsim_exact", "muvera", "muvera_identity"])
def test_a_model_that_cannot_be_loaded_is_named_with_the_operators_parameter(monkeypatch, make):
    """``MaxSim(model='no/such-model-xyz').fit(c)`` raised "model 'no/such-model-xyz' is neither a local folder
    nor in the Hugging Face cache..." without the ``maxsim.model:`` a missing folder gets: the model loads
    lazily, at the first encode, outside the prefixing ``token_encoder`` does."""
    from ragkit.filters import MaxSim
    from ragkit.retrievers import MaxSimExact, Muvera

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "no/such-model-xyz"
    op = {"maxsim": lambda: MaxSim(model=name), "maxsim_exact": lambda: MaxSimExact(model=name),
          "muvera": lambda: Muvera(model=name),
          "muvera_identity": lambda: Muvera(model=name, projection="identity")}[make]()
    where = make.replace("_identity", "")
    with pytest.raises(ParamError, match=f"^{where}\\.model: model 'no/such-model-xyz' is neither a local folder") \
            as e:
        op.fit(_corpus(3))
    assert e.value.path == f"{where}.model"


def test_a_model_that_cannot_be_loaded_at_search_is_named_too(monkeypatch):
    """The same at the query's encode (a fitted operator whose model went away)."""
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25, Muvera
    from ragkit.retrievers.muvera import TokenOperatorMixin

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(TokenOperatorMixin, "_fit_tokens", lambda self, corpus, train=None: setattr(
        self, "tokens_", _token_sets(np.random.default_rng(13), 30, 1, 5, 8)))
    from ragkit.filters import MaxSim

    for pipe, where in ((Pipeline([Muvera(model="no/such-model-xyz", k=5, candidates=10, k_sim=2, d_proj=8,
                                          r_reps=2)]), "muvera"),
                        (Pipeline([BM25(k=5), MaxSim(model="no/such-model-xyz")]), "maxsim")):
        pipe.fit(_corpus(30))
        with pytest.raises(ParamError, match=f"^{where}\\.model: model 'no/such-model-xyz' is neither"):
            pipe.search(["text 3"])


def test_dense_names_a_model_that_cannot_be_loaded_with_its_parameter():
    """The prefix muvera and maxsim got now comes from Operator.fit / __call__, so dense has it too (it said
    "model 'no/such-model-xyz' is neither a local folder ..." naming no operator)."""
    from ragkit.errors import ParamError
    from ragkit.retrievers import Dense
    from ragkit.types import Corpus

    with pytest.raises(ParamError, match=r"^dense\.model: model 'no/such-model-xyz' is neither a local folder") as e:
        Dense(model="no/such-model-xyz").fit(Corpus.from_texts(["a cat", "a dog"]))
    assert e.value.path == "dense.model"
