"""Dense retrieval over a 1-bit index with float rescoring; the same pipeline as ``quantized.yaml``.

MiniLM document vectors are stored as packed sign bits (48 bytes per 384-d vector, 1/32 of
float32); a query is scored against the bits, and a shortlist of ``oversample x k`` (4 x 100)
is re-scored with the float vectors, kept memory-mapped on disk, so memory holds only the bits.
On SciFact test this keeps nDCG@10 within 0.001 of float32 (README, "Dense retrieval over
quantized indexes"). ``dtype: i8`` (1/4 of the memory, no rescoring needed) and ``reduce:
pca:<d>`` are the other knobs; ``search: hnsw`` walks a graph of the same codes.

    python examples/quantized.py [--data DIR] [--split S] [--limit N] [--json]

Needs the MiniLM model (sentence-transformers, cached locally) and SciFact. On 2 cores, once the
document vectors are cached: about 3 s, with ``--limit 8`` or on the full SciFact test set (whose
first run encodes 5,183 documents: several minutes).
Prints nDCG@10 and Recall@100, then the index's bytes in memory against float32's (to
standard error with ``--json``, whose one line stays the last of standard output); on the full
SciFact test split: 0.6451 / 0.9233, 248.0 KiB in memory for 5,183 documents against 7,774.5 KiB.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ragkit.pipelines import Pipeline  # noqa: E402
from ragkit.retrievers import Dense  # noqa: E402


def build() -> Pipeline:
    return Pipeline([Dense(k=100, dtype="b1", rescore=True, oversample=4)])


if __name__ == "__main__":
    from _common import note, parse_args, run

    args = parse_args(__doc__)
    pipe = build()
    n = len(run(pipe, args, "quantized").data.corpus)
    dense = pipe.steps[0]
    assert isinstance(dense, Dense)
    held = dense.index_.memory_bytes()  # the learned index's codes + calibration in memory (not the floats' mmap)
    floats = n * dense.index_.d_in * 4  # (n, dim) float32 vectors (the index's width: no model load)
    note(args, f"index in memory: {held / 1024:,.1f} KiB for {n:,} documents (float32 vectors: {floats / 1024:,.1f} "
               "KiB; the floats for rescoring stay on disk)")
