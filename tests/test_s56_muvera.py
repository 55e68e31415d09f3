"""Review s56 of MUVERA's FDE functions: numpy-integer seeds, d_proj checked before encoding for an unlisted model,
FDEConfig's remaining type and size checks, float candidate rows, q_weights of the wrong length."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.errors import ParamError
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
