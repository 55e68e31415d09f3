"""Generators: answers from the top chunks.

* :class:`~ragkit.generators.operator.Generate` — the ``generate`` operator;
* :class:`~ragkit.generators.local.LocalGenerator` — a local Hugging Face causal LM with
  Cache-Craft chunk KV-cache reuse (arXiv 2502.15734) and CacheBlend's selector (arXiv 2405.16444);
* :class:`~ragkit.generators.langchain_chat.LangChainGenerator` — any LangChain chat model;
* :class:`~ragkit.generators.PrefillCost` — what one answer's prefill cost and reused
  (``values["prefill"]``), and :data:`~ragkit.generators.NO_DOCUMENT` / :data:`~ragkit.generators.NO_TEXT` /
  :data:`~ragkit.generators.NO_QUESTION`,
  the reasons ``values["answer_skipped"]`` gives for a query not sent to the model.

The engines import torch/transformers/langchain-core lazily, on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ragkit.generators.operator import NO_DOCUMENT, NO_QUESTION, NO_TEXT, Generate, GenerateParams

if TYPE_CHECKING:
    from ragkit.generators.langchain_chat import LangChainGenerator
    from ragkit.generators.local import LocalGenerator, PrefillCost

__all__ = ["Generate", "GenerateParams", "LocalGenerator", "LangChainGenerator", "PrefillCost", "NO_DOCUMENT",
           "NO_TEXT", "NO_QUESTION"]


def __getattr__(name: str) -> Any:
    if name in ("LocalGenerator", "PrefillCost"):  # (torch is imported with them)
        from ragkit.generators import local

        return getattr(local, name)
    if name == "LangChainGenerator":
        from ragkit.generators.langchain_chat import LangChainGenerator

        return LangChainGenerator
    raise AttributeError(f"module 'ragkit.generators' has no attribute {name!r}")
