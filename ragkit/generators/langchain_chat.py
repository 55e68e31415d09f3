"""Adapter: any LangChain chat model as a ragkit generator backend.

``langchain_core`` is imported lazily, so ragkit works without it until this backend is used.
The prompt mirrors :class:`~ragkit.generators.local.LocalGenerator`: a system message, then
one user message with the documents and the question.  No chunk-cache reuse happens here
(the remote model owns its own caching).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Sequence

from ragkit.errors import InputTypeError, require
from ragkit.generators._prompt import DEFAULT_SYSTEM, _check_prompt, _source_chunks, warn_cut

__all__ = ["LangChainGenerator"]

_log = logging.getLogger("ragkit")


def _lc_messages():
    try:
        from langchain_core.messages import HumanMessage, SystemMessage
    except ImportError:  # pragma: no cover - depends on the environment
        require(["langchain_core"], extra=None, what="the LangChain generator backend needs langchain-core",
                install="pip install 'langchain-core>=0.3'")
        raise  # (installed, and failing to import: its own error)
    return SystemMessage, HumanMessage


def _text(content: Any) -> str:
    """The text of a message's content: a string, or a list of content blocks (strings or
    ``{"type": "text", "text": ...}`` dicts; other blocks such as tool calls carry no text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "".join(b if isinstance(b, str) else str(b.get("text", "")) if isinstance(b, dict)
                       and b.get("type", "text") == "text" else "" for b in content)
    return str(content)


class LangChainGenerator:
    """Answer from retrieved chunks with any LangChain ``BaseChatModel``.

    Parameters
    ----------
    chat_model : langchain_core.language_models.BaseChatModel
        Any chat model (``ChatOpenAI``, ``ChatOllama``, a fake model in tests, ...).
    system_prompt : str
        The system message.
    max_chunk_words : int or None
        Each chunk is cut to this many whitespace-separated words (the chat model's own
        tokenizer is not at hand); ``None`` keeps chunks whole.  A warning on the ``ragkit`` logger
        names the chunks that lose more than half their words (a whole context passed as one chunk),
        as :class:`~ragkit.generators.local.LocalGenerator` does for its tokens.
    """

    def __init__(self, chat_model: Any, *, system_prompt: str = DEFAULT_SYSTEM,
                 max_chunk_words: int | None = None) -> None:
        if not hasattr(chat_model, "invoke"):
            raise InputTypeError(
                f"LangChainGenerator: chat_model must be a LangChain chat model with .invoke(); "
                f"got {type(chat_model).__name__}"
            )
        self.chat_model = chat_model
        self.system_prompt = system_prompt
        self.max_chunk_words = max_chunk_words

    def _cut(self, chunks: Sequence[str]) -> list[str]:
        """The chunks stripped and cut to ``max_chunk_words``; one warning for those that lose more than half."""
        out = [c.strip() for c in chunks]
        limit = self.max_chunk_words
        if limit is None:
            return out
        cut = []  # (position, words) of each chunk cut to less than half
        for i, c in enumerate(out):
            words = c.split()
            if len(words) > limit:
                out[i] = " ".join(words[:limit])
                if len(words) > 2 * limit:
                    cut.append((i, len(words)))
        if cut:
            warn_cut(self, "LangChainGenerator", cut, len(out), f"max_chunk_words={limit:,} words", limit, "words",
                     "Raise it (generate's max_chunk_tokens in a pipeline)")
        return out

    def messages(self, question: str, chunks: Sequence[str]) -> list[Any]:
        """The system message and the user message holding the chunks (``chunks``: a list of str, one
        per chunk; a single str is refused with a :class:`~ragkit.errors.ParamError`, as by
        :class:`~ragkit.generators.local.LocalGenerator`: it would be taken character by character)."""
        _check_prompt(question, chunks, "LangChainGenerator")
        return self._messages(question, chunks)

    def _messages(self, question: str, chunks: Sequence[str]) -> list[Any]:
        """:meth:`messages` of a question and chunks already checked."""
        SystemMessage, HumanMessage = _lc_messages()
        docs = "".join(c + "\n\n" for c in self._cut(chunks))
        return [SystemMessage(content=self.system_prompt),
                HumanMessage(content=f"Documents:\n{docs}Question: {question.strip()}")]

    def generate(self, question: str, chunks: Sequence[str], *, on_token: Callable[[str], None] | None = None,
                 **_: Any) -> str:
        """The answer text, its surrounding whitespace stripped; with ``on_token`` the model is streamed
        piece by piece, the pieces joining to exactly the returned text (see :meth:`stream`).

        Blank chunks are dropped; with none left (``[]``, ``[""]``) the answer is ``""`` and the chat model is
        not called (it would answer from no source), as :meth:`LocalGenerator.generate
        <ragkit.generators.local.LocalGenerator.generate>` does."""
        kept = _source_chunks(question, chunks, "LangChainGenerator", _log, "the chat model is not called")
        if not kept:
            return ""
        if on_token is None:
            out = self.chat_model.invoke(self._messages(question, kept))
            return _text(getattr(out, "content", out)).strip()
        return "".join(self._stream(self._messages(question, kept), on_token))

    def stream(self, question: str, chunks: Sequence[str], *, on_token: Callable[[str], None] | None = None,
               **_: Any) -> Iterator[str]:
        """Yield text pieces as the chat model streams them; they join to the answer with its surrounding
        whitespace stripped (what :meth:`generate` returns), as the local backend's do: leading whitespace
        is not sent, trailing whitespace is held back until more text follows.  Blank chunks are dropped; with
        none left nothing is yielded and the chat model is not called."""
        kept = _source_chunks(question, chunks, "LangChainGenerator")  # checked before the model is called
        if kept:
            yield from self._stream(self._messages(question, kept), on_token)

    def _stream(self, messages: list[Any], on_token: Callable[[str], None] | None) -> Iterator[str]:
        """:meth:`stream` of the prompt ``messages`` (:meth:`_messages`)."""
        held = ""  # whitespace after the text sent so far, sent only if more text follows
        started = False
        for part in self.chat_model.stream(messages):
            piece = _text(getattr(part, "content", ""))
            if not started:
                piece = piece.lstrip()
                started = bool(piece)
            text = held + piece
            body = text.rstrip()
            held = text[len(body):]
            if body:
                if on_token is not None:
                    on_token(body)
                yield body
