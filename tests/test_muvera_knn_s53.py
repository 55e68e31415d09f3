"""Review s53 of MUVERA, KnnEmbed and MaxSim: FDEConfig's and the FDE offsets' type checks, one sparse product
over all repetitions, empty-bucket filling over the documents that need it, KnnEmbed's warning when a query's
components outnumber its slots, rocchio_filter without a copy of the vectors, MaxSim's blank candidate."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.errors import DataError, ParamError
from ragkit.retrievers.fde import FDEConfig, fde_documents, fde_queries


def _unit_sets(rng: np.random.Generator, lens, d: int) -> tuple[np.ndarray, np.ndarray]:
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    x = rng.standard_normal((int(off[-1]), d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), off


# ------------------------------------------------------------------------------ FDEConfig and offsets checks
@pytest.mark.parametrize("field, value", [("k_sim", 2.5), ("d_proj", 4.0), ("r_reps", True), ("d_final", 8.0),
                                          ("seed", "3"), ("k_sim", False)])
def test_fde_config_refuses_non_integer_sizes(field, value):
    """A float ``k_sim`` or ``d_proj`` failed deep in numpy with "'float' object cannot be interpreted as an
    integer"; a bool passed as 1 or 0."""
    with pytest.raises(ParamError, match=rf"FDEConfig\.{field} must be an integer.*got {value!r}"):
        FDEConfig(**{field: value})


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_fde_config_refuses_a_seed_outside_numpys_range(seed):
    """seed -1 failed at the first encoding with numpy's "expected non-negative integer"."""
    with pytest.raises(ParamError, match=rf"FDEConfig\.seed must be in 0\.\.4294967295.*got {seed}"):
        FDEConfig(seed=seed)


def test_fde_config_takes_numpy_integers():
    assert FDEConfig(k_sim=np.int64(3), d_proj=np.int32(4), r_reps=np.uint8(2), seed=np.int64(2**32 - 1)).k_sim == 3


def test_fde_refuses_float_offsets():
    """Offsets [0, 4.5, 10] were read as [0, 4, 10], silently."""
    x = np.random.default_rng(0).standard_normal((10, 8)).astype(np.float32)
    cfg = FDEConfig(k_sim=2, d_proj=4, r_reps=2)
    for f in (fde_queries, fde_documents):
        with pytest.raises(DataError, match="FDE: offsets must be integers, got dtype float64"):
            f(x, np.array([0, 4.5, 10]), cfg)
    assert fde_queries(x, np.array([0, 4, 10], np.int32), cfg).shape == (2, 2 * 4 * 4)
