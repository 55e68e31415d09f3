"""Review s56 of MUVERA's FDE functions: numpy-integer seeds, d_proj checked before encoding for an unlisted model,
FDEConfig's remaining type and size checks, float candidate rows, q_weights of the wrong length."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.errors import DataError, ParamError
from ragkit.retrievers import fde as F
from ragkit.retrievers.fde import FDEConfig, fde_queries


def _unit_sets(rng: np.random.Generator, lens, d: int) -> tuple[np.ndarray, np.ndarray]:
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    x = rng.standard_normal((int(off[-1]), d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), off


# ------------------------------------------------------------------------------ 1. numpy-integer seeds
@pytest.mark.parametrize("np_seed", [np.uint32(2**32 - 2), np.int32(2**31 - 1)])
def test_a_numpy_seed_encodes_as_its_int_and_leaves_the_draw_cache_alone(np_seed):
    """``default_rng(seed + r)`` was computed in the seed's numpy type: np.uint32(2**32 - 2) + 2 wrapped to 0,
    np.int32(2**31 - 1) + 1 overflowed (an error), and the draw cache keys np.uint32(s) == s, so a numpy-seed caller
    left its draws for every later int-seed FDE of the process."""
    x, off = _unit_sets(np.random.default_rng(0), [5, 3], 8)
    seed = int(np_seed)

    def enc(s) -> np.ndarray:
        return fde_queries(x, off, FDEConfig(k_sim=2, d_proj=4, r_reps=3, seed=s))

    F._draw_matrices.cache_clear()
    plain = enc(seed)
    F._draw_matrices.cache_clear()
    numpy_first = enc(np_seed)  # fills the shared cache first
    after = enc(seed)
    assert np.array_equal(plain, numpy_first) and np.array_equal(plain, after)
    cfg = FDEConfig(k_sim=np.int64(2), d_proj=np.int16(4), r_reps=np.uint8(3), d_final=np.int64(20), seed=np_seed)
    assert all(type(getattr(cfg, f)) is int for f in ("k_sim", "d_proj", "r_reps", "d_final", "seed"))


# ------------------------------------------------------------------------------ 2. d_proj before encoding
def test_muvera_d_proj_of_an_unlisted_model_checked_before_encoding(monkeypatch):
    """For a model outside KNOWN_DIMS (a local folder, an unlisted hub id) the d_proj check ran only after the whole
    corpus was encoded; the token encoder's own dim answers it first (as the identity size check did)."""
    import ragkit.retrievers.muvera as mv
    from ragkit.encoders.tokens import TokenEncoder, TokenVectors
    from ragkit.retrievers import Muvera
    from ragkit.types import Corpus

    class Unlisted(TokenEncoder):
        dim = 16  # type: ignore[assignment]

        def _forward(self, texts, progress=False, lens=None) -> TokenVectors:
            raise AssertionError("encoded before the d_proj check")

    monkeypatch.setattr(mv, "get_token_encoder", lambda model, **kw: Unlisted(cache=False, **kw))
    corpus = Corpus(ids=["a", "b"], texts=["one text", "another text"])
    op = Muvera(model="my-org/unlisted-model", k=1, candidates=2, k_sim=2, r_reps=2, d_proj=32)
    with pytest.raises(ParamError, match=r"muvera\.d_proj: d_proj \(32\) is larger than the 16-d token vectors"):
        op.fit(corpus)


# ------------------------------------------------------------------------------ 3. FDEConfig's other fields
@pytest.mark.parametrize("kw, match", [
    ({"fill_empty": "no"}, r"FDEConfig\.fill_empty must be a bool, got 'no' \(str\)"),
    ({"fill_empty": 0}, r"FDEConfig\.fill_empty must be a bool, got 0 \(int\)"),
    ({"mean_weight": "1"}, r"FDEConfig\.mean_weight must be a real number, got '1' \(str\)"),
    ({"mean_weight": True}, r"FDEConfig\.mean_weight must be a real number, got True \(bool\)"),
    ({"mean_weight": float("nan")}, r"FDEConfig\.mean_weight must be in \[0, 10000\].*got nan"),
    ({"d_final": 10**10}, r"FDEConfig\.d_final must be in 1\.\.1,048,576 or None .*got 10,000,000,000"),
])
def test_fde_config_refuses_bad_fill_empty_mean_weight_and_d_final(kw, match):
    """fill_empty="no" was taken (and acted as True), mean_weight="1" gave a raw TypeError, and d_final 10**10 was
    taken, then asked for 37 GiB at the encoding (a MemoryError)."""
    with pytest.raises(ParamError, match=match):
        FDEConfig(**kw)
    cfg = FDEConfig(fill_empty=np.bool_(False), mean_weight=np.float32(0.5), d_final=2**20)
    assert cfg.fill_empty is False and type(cfg.mean_weight) is float and cfg.mean_weight == 0.5


def test_fde_encoding_refuses_a_d_final_that_does_not_shrink_or_blocks_too_wide():
    """The d_final and size checks Muvera makes, at the encoding, where the token width is known: a d_final of 500
    over 2 * 8 * 4 = 64 block columns built 500 sketched columns of 64 (no check), an identity FDE over 2**20 was
    built whatever its size."""
    x, off = _unit_sets(np.random.default_rng(1), [3, 2], 8)
    cfg = FDEConfig(k_sim=3, d_proj=4, r_reps=2, d_final=64)
    for f in (F.fde_queries, F.fde_documents, F.fde_document_chunks):
        with pytest.raises(ParamError, match=r"FDEConfig\.d_final \(64\) must be smaller than r_reps \* 2\*\*k_sim \* "
                                             r"d_proj = 2 \* 2\*\*3 \* 4 = 64"):
            f(x, off, cfg)
    ident = FDEConfig(k_sim=12, r_reps=64, projection="identity")  # 64 * 4096 * 8 = 2,097,152 columns
    with pytest.raises(ParamError, match=r"FDEConfig: the FDE would have r_reps \* 2\*\*k_sim \* the 8-d tokens = 64 "
                                         r"\* 2\*\*12 \* 8 \(projection: identity\) = 2,097,152 dimensions"):
        F.fde_queries(x, off, ident)
    assert F.fde_queries(x, off, FDEConfig(k_sim=3, d_proj=4, r_reps=2, d_final=63)).shape == (2, 63)


# ------------------------------------------------------------------------------ 4. float candidate rows
@pytest.mark.parametrize("rows", [np.array([[1.7], [0.2]]), np.array([[np.nan], [0.0]]), np.array([[True], [False]])])
def test_pair_scorers_refuse_rows_that_are_not_integers(rows):
    """chamfer_pairs / centroid_pairs read float rows [[1.7], [0.2]] as documents 1 and 0, silently, and a NaN as
    -2**63 (a message about a row nobody gave)."""
    from ragkit.retrievers.centroids import centroid_pairs

    x = np.ones((4, 3), np.float32)
    q_off, d_off = np.array([0, 2, 4]), np.array([0, 1, 2, 4])
    msg = rf"rows must be integer document rows \(0\.\.2, -1 pads\), got dtype {rows.dtype}"
    with pytest.raises(DataError, match="chamfer_pairs: " + msg):
        F.chamfer_pairs(x, q_off, x, d_off, rows)
    with pytest.raises(DataError, match="centroid_pairs: " + msg):
        centroid_pairs(x, q_off, x[:2], np.array([0, 1, 0, 1], np.uint16), d_off, rows)
    good = np.array([[1], [-1]])
    assert F.chamfer_pairs(x, q_off, x, d_off, good).tolist() == [[6.0], [-np.inf]]
    assert F.chamfer_pairs(x, q_off, x, d_off, np.zeros((2, 0))).shape == (2, 0)  # (no candidates: any dtype)


# ------------------------------------------------------------------------------ 5. q_weights' length
@pytest.mark.parametrize("n_w", [3, 5])
def test_pair_and_matrix_scorers_refuse_q_weights_of_another_length(n_w):
    """q_weights were never checked against the query tokens: chamfer_pairs failed with an IndexError (too short) or
    took them (too long), chamfer_scores with a broadcast error, centroid_pairs alike."""
    from ragkit.retrievers.centroids import centroid_pairs

    x, q_off = _unit_sets(np.random.default_rng(2), [2, 2], 3)  # 4 query tokens
    d_off = np.array([0, 1, 2, 4])
    w = np.ones(n_w, np.float32)
    msg = rf"q_weights must hold one weight per query token, got length {n_w} for 4 query tokens"
    with pytest.raises(DataError, match="chamfer_pairs: " + msg):
        F.chamfer_pairs(x, q_off, x, d_off, np.array([[0], [1]]), q_weights=w)
    with pytest.raises(DataError, match="chamfer_scores: " + msg):
        F.chamfer_scores(x, q_off, x, d_off, q_weights=w)
    with pytest.raises(DataError, match="centroid_pairs: " + msg):
        centroid_pairs(x, q_off, x[:2], np.array([0, 1, 0, 1], np.uint16), d_off, np.array([[0], [1]]), q_weights=w)
    w4 = np.array([1.0, 2.0, 0.5, 1.0], np.float32)  # the right length: weighted as before
    want = F.chamfer_scores(x, q_off, x, d_off, q_weights=w4)
    got = F.chamfer_pairs(x, q_off, x, d_off, np.array([[0, 2], [1, 2]]), q_weights=w4)
    np.testing.assert_allclose(got, [[want[0, 0], want[0, 2]], [want[1, 1], want[1, 2]]], rtol=1e-6)
