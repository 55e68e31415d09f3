"""The checks of what users pass RagkitRetriever's methods: queries, LangChain Documents, texts with their
metadatas and ids, arguments given by position, and the metadata keys RagkitRetriever writes into every returned
Document (a corpus holding one of them is refused)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Mapping

from langchain_core.documents import Document
from pydantic import BaseModel

from ragkit._checks import _SURROGATE, _utf8_clean
from ragkit._corpus import _doc_id
from ragkit.errors import DataError, InputTypeError, ParamError
from ragkit.types import Corpus


def _unsearched(bad: Mapping[int, DataError], n: int) -> DataError:
    """The error that ends the callback run of each good query of a batch of ``n`` that is not searched
    because of the queries ``bad`` (``return_exceptions=False``): every run started is ended, as
    ``Runnable.batch`` ends them, so a tracer shows no run left open."""
    error = next(iter(bad.values()))  # (its message names its query)
    return DataError(f"not searched: {len(bad)} of the batch's {n} queries failed ({error}), so "
                     "the batch raised before searching; fix those, or pass return_exceptions=True to search the "
                     "others")


class InputListError(InputTypeError, DataError):
    """One value (a string, a Document, ``None``) where a list is expected, by ``from_texts``: an
    :class:`~ragkit.errors.InputTypeError` as ``from_documents`` raises, and a :class:`~ragkit.errors.DataError`
    as it raised before (an ``except DataError`` still catches it)."""


#: keyword arguments LangChain itself may leave in ``invoke``'s (and ``batch``'s, ``stream``'s) kwargs: never search
#: options of RagkitRetriever's, nor settings of RagkitGenerator's
_LANGCHAIN_KWARGS = frozenset({"verbose", "run_id", "run_name", "callbacks", "tags", "metadata"})


def _batch_list(inputs: Any, where: str, expected: str = "a list of query strings",
                mapping: str = "pass list(mapping.values())",
                error: Callable[[str], Exception] = DataError) -> list[Any]:
    """The ``inputs`` of a ``batch`` / ``abatch`` (``where``) as a list, or ``error(message)`` saying what was given
    instead of ``expected``: one string (its characters would be the inputs: wrap it in a list, or call invoke), one
    mapping (its keys would be; ``mapping`` says what to pass), one Document (a pydantic model iterates as its
    ``(field, value)`` pairs), or anything that is no collection."""
    if isinstance(inputs, (str, bytes)):
        hint = "its characters would be the inputs; wrap it in a list, or call invoke"
    elif isinstance(inputs, Document):
        hint = "its fields would be the inputs"
    elif isinstance(inputs, Mapping):
        hint = f"its keys would be the inputs; {mapping}"
    elif not isinstance(inputs, Iterable):
        hint = "it is no collection"
    else:
        return list(inputs)
    raise error(f"{where}: expected {expected}, got {type(inputs).__name__} {inputs!r:.60} ({hint})")


def _query_errors(queries: list[Any], *, one: bool) -> dict[int, DataError]:
    """``{position: DataError}`` for each query that is no string or holds a lone surrogate (no Unicode
    text: ``errors="surrogateescape"`` bytes), named as the caller gave it: ``the query`` (``one``: an
    ``invoke``), else ``query <position>`` of the batch.  Batched: one ``str.join`` and one UTF-8 test
    (``isascii`` first) over the whole batch; only a batch holding a bad query is looked at query by query."""
    def where(i: int) -> str:
        return "the query" if one else f"query {i}"

    try:
        joined = "\x00".join(queries)
    except TypeError:  # some query is no string: which, one by one
        errors = {i: DataError(f"{where(i)}: expected a string, got {type(q).__name__} {q!r:.80}")
                  for i, q in enumerate(queries) if not isinstance(q, str)}
        joined = "\x00".join(q for q in queries if isinstance(q, str))
    else:
        errors = {}
    if _utf8_clean(joined):
        return errors
    for i, q in enumerate(queries):
        if isinstance(q, str) and (hit := _SURROGATE.search(q)) is not None:
            errors[i] = DataError(f"{where(i)} holds a lone surrogate {hit.group()!r} at character {hit.start()}, "
                                  "which is no Unicode text (bytes decoded with errors='surrogateescape'?); decode "
                                  "the source with its real encoding")
    return dict(sorted(errors.items()))


def _positional(method: str, first: str, args: tuple[Any, ...], keywords: str) -> ParamError:
    """The error for arguments given by position after ``first`` to ``method`` (keyword-only)."""
    shown = ", ".join(f"{type(a).__name__} {a!r:.40}" for a in args)
    return ParamError(f"RagkitRetriever.{method}: takes only {first} by position, got {len(args)} more ({shown}); "
                      f"pass the rest by keyword: {method}({first}, {keywords}) (LangChain's BM25Retriever."
                      f"{method} takes metadatas second; ragkit's first keyword used to be pipeline)")


def _document_list(where: str, documents: Any, error: type[DataError] | type[InputTypeError],
                   texts_method: str) -> list[Document]:
    """``documents`` as a list of LangChain Documents, or ``error`` saying what ``where`` was given instead: one
    Document (a pydantic model iterates as its ``(field, value)`` pairs), one string (its characters would be the
    documents; ``texts_method`` takes strings), ``None`` or anything else that is no collection, or an item that is
    no Document."""
    if isinstance(documents, Document):
        raise error(f"{where}: got one Document ({documents.page_content!r:.60}); expected a list of Documents: wrap "
                    "it in a list")
    if isinstance(documents, (str, bytes)):
        raise error(f"{where}: got one string ({documents!r:.60}); expected a list of LangChain Documents "
                    f"({texts_method} takes strings)")
    if isinstance(documents, Mapping) or not isinstance(documents, Iterable):
        raise error(f"{where}: got {type(documents).__name__} ({documents!r:.60}); expected a list of LangChain "
                    "Documents")
    docs = list(documents)
    bad = next((i for i, d in enumerate(docs) if not isinstance(d, Document)), None)
    if bad is not None:
        hint = f" ({texts_method} takes strings)" if isinstance(docs[bad], str) else ""
        raise error(f"{where}: item {bad} is a {type(docs[bad]).__name__} ({docs[bad]!r:.60}), expected a LangChain "
                    f"Document{hint}")
    return docs


def _one_each(where: str, name: str, what: str, value: Any, n: int, per: str = "text") -> list[Any] | None:
    """``value`` (``metadatas`` or ``ids`` of ``n`` texts, or of ``n`` documents: ``per``) as a list of ``n``, or
    ``None`` when not given; one string, mapping or Document (its characters, keys or fields would be the values),
    anything that is no collection, or another length than ``n`` is a :class:`DataError` saying what ``where``
    expected: ``ids must list one id per text (2), got ['x']``."""
    if value is None:
        return None
    listed = (list(value) if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping, BaseModel))
              else None)
    if listed is None or len(listed) != n:
        raise DataError(f"{where}: {name} must list {what} per {per} ({n}), got {value!r:.80}")
    return listed


def _written_ids(where: str, ids: list[Any] | None) -> list[str | None] | None:
    """The ids of ``where``'s ``ids=`` (``None``: not given) each as a Corpus writes ids
    (:func:`~ragkit._corpus._doc_id`: ``1.0`` as ``"1"``, a missing one ``None``)."""
    return None if ids is None else [_doc_id(x, i, f"{where}: ids") for i, x in enumerate(ids)]


def _checked_texts(where: str, texts: list[Any], metadatas: Any, ids: Any,
                   docs_method: str) -> tuple[list[dict[str, Any]], list[str | None] | None]:
    """The checks of ``add_texts`` and ``from_texts`` (``where``), before any Document is made: every text a
    string, ``metadatas`` one dict (or ``None``) per text, ``ids`` one id per text; a :class:`DataError` naming
    the first that is not.  Returns each text's metadata (a new dict) and the ids as a Corpus writes them
    (:func:`_written_ids`: a missing one ``None``; the list ``None``: not given).  A Document among the texts is
    said to be ``docs_method``'s."""
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        hint = f" ({docs_method} takes Documents)" if isinstance(texts[bad], Document) else ""
        raise DataError(f"{where}: text {bad} is {type(texts[bad]).__name__} {texts[bad]!r:.60}, expected a "
                        f"string{hint}")
    metas = _one_each(where, "metadatas", "one dict", metadatas, len(texts))
    listed = _one_each(where, "ids", "one id", ids, len(texts))
    if metas is None:
        return [{} for _ in texts], _written_ids(where, listed)
    bad = next((i for i, m in enumerate(metas) if m is not None and not isinstance(m, Mapping)), None)
    if bad is not None:
        raise DataError(f"{where}: metadatas[{bad}] is {type(metas[bad]).__name__} {metas[bad]!r:.60}, "
                        "expected a dict")
    return [dict(m or {}) for m in metas], _written_ids(where, listed)

# Keys each returned Document's metadata gets from the retrieval: a document's own key of the same name is refused
RESERVED_METADATA = ("score", "rank", "operators", "branches", "fields")


def _check_reserved(corpus: Corpus, where: str) -> None:
    """Refuse (:class:`ParamError`, from ``where``) documents whose metadata holds a key of :data:`RESERVED_METADATA`;
    for ``add_documents``, also how to drop the keys a retriever wrote into the documents it returned."""
    clash = [key for key in RESERVED_METADATA if key in corpus.metadata]
    if clash:
        raise ParamError(
            f"{where}: the documents' metadata has {', '.join(repr(c) for c in clash)}, which RagkitRetriever "
            f"writes into every returned Document's metadata ({', '.join(RESERVED_METADATA)}); rename "
            f"{'that key' if len(clash) == 1 else 'those keys'} (e.g. 'doc_{clash[0]}')" + (
                "; documents a retriever returned (invoke, batch) carry the keys it wrote: drop them before adding "
                "the documents again, e.g. Document(d.page_content, id=d.id, metadata={k: v for k, v in "
                "d.metadata.items() if k not in RESERVED_METADATA}) (RESERVED_METADATA from "
                "ragkit.integrations.langchain)" if where == "add_documents" else ""))
