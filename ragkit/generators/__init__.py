"""Generators: answers from the top chunks.

* :class:`~ragkit.generators.operator.Generate` — the ``generate`` operator;
* :class:`~ragkit.generators.local.LocalGenerator` — a local Hugging Face causal LM with
  Cache-Craft chunk KV-cache reuse (arXiv 2502.15734) and CacheBlend's selector (arXiv 2405.16444);
* :class:`~ragkit.generators.langchain_chat.LangChainGenerator` — any LangChain chat model.

The engines import torch/transformers/langchain-core lazily, on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ragkit.generators.operator import Generate, GenerateParams

if TYPE_CHECKING:
    from ragkit.generators.langchain_chat import LangChainGenerator
    from ragkit.generators.local import LocalGenerator

__all__ = ["Generate", "GenerateParams", "LocalGenerator", "LangChainGenerator"]


def __getattr__(name: str) -> Any:
    if name == "LocalGenerator":
        from ragkit.generators.local import LocalGenerator

        return LocalGenerator
    if name == "LangChainGenerator":
        from ragkit.generators.langchain_chat import LangChainGenerator

        return LangChainGenerator
    raise AttributeError(f"module 'ragkit.generators' has no attribute {name!r}")
