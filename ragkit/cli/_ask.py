"""``ragkit ask``: answer a question with retrieval and a local LLM, streaming the answer."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

import typer
from rich.text import Text

from ragkit._text import is_blank
from ragkit.cli._app import _examples, _fail, _RunFailure, app
from ragkit.cli._console import _note, console, err_console
from ragkit.cli._options import _expands_paths, _path_option, _ranged_option
from ragkit.cli._pipeline import _check_retrieves, _in_file, resolve_pipeline
from ragkit.cli._streams import _say_interrupted
from ragkit.errors import ParamError, RagkitError
from ragkit.params import MAX_INT

if TYPE_CHECKING:
    from ragkit.types import Corpus


def _read_ask_corpus(data: str) -> Any:
    """The corpus ``ragkit ask`` fits on: a ``corpus.jsonl`` file, a folder holding one (a BEIR folder,
    or the corpus alone: ask needs no queries or judgements), or a BEIR dataset name."""
    from ragkit import load_beir
    from ragkit.eval.beir import read_corpus

    path = Path(data)
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        return read_corpus(path / "corpus.jsonl")
    if path.is_file():
        return read_corpus(path)
    if not path.exists() and (path.suffix or any(c in data for c in "/\\") or data.startswith(".")):
        raise RagkitError(f"--data {data}: no such file or folder; expected a BEIR dataset name or folder, or a "
                          "corpus.jsonl file")
    return load_beir(data).corpus


def _default_chunk_dir() -> str | None:
    """``ragkit ask``'s chunk-cache folder for the default model: ``<ragkit cache>/chunks/<fingerprint of
    its GGUF file>`` (one folder per model: a store refuses a folder written for another); ``None`` when
    the default model cannot be found (the generate step's check says so), and when that folder cannot
    hold a chunk cache (below a file, not writable, a damaged manifest): a note names ``$RAGKIT_CACHE``
    (the user passed no --cache-dir) and the answer is computed without a disk tier."""
    from ragkit.caches.chunk_kv import check_cache_dir
    from ragkit.encoders.sentence import model_fingerprint
    from ragkit.errors import ArtifactError
    from ragkit.eval.beir import cache_dir
    from ragkit.generators.local import default_gguf

    try:
        folder, name = default_gguf()
    except (ImportError, FileNotFoundError):
        return None
    chunks = cache_dir() / "chunks" / model_fingerprint(str(Path(folder) / name))
    try:
        check_cache_dir(chunks)  # (a folder that cannot be written, too)
    except ArtifactError as e:
        where = (f"$RAGKIT_CACHE={os.environ['RAGKIT_CACHE']}" if "RAGKIT_CACHE" in os.environ
                 else "~/.cache/ragkit, the default of $RAGKIT_CACHE")
        _note(f"note: the chunk cache's default folder under {where} cannot be used ({e}); answering without "
              "keeping the chunks on disk: set RAGKIT_CACHE to a writable folder, or pass --cache-dir", style="dim")
        return None
    return str(chunks)


def _check_llm_packages(gens: list[Any]) -> None:
    """Refuse, before the fit, a local generate step whose model is a GGUF file (the default SmolLM2 one, a
    ``.gguf`` path or a ``gguf_file``) when the packages transformers reads GGUF files with (``gguf``,
    ``accelerate``) are not installed (:func:`~ragkit.generators.local.check_llm_packages`, which a pipeline's
    fit runs too: here also for a saved pipeline, which is not fitted)."""
    from ragkit.generators.local import check_llm_packages

    for g in gens:
        if g.params.backend == "local":
            check_llm_packages(g.params.model, g.params.gguf_file)


@contextmanager
def _quiet_model_loading() -> Iterator[None]:
    """No progress bars while the language model loads (transformers draws one for its weights, and one while it
    parses a GGUF file, over ``ragkit ask``'s status line)."""
    from ragkit._progress import quiet_progress

    with quiet_progress("transformers.modeling_gguf_pytorch_utils"):
        yield


@app.command("ask", epilog=_examples(
    'ragkit ask --pipeline bm25 --data scifact "How does white matter develop in newborns?"'))
@_expands_paths
def ask_cmd(
    question: str = typer.Argument(..., metavar="QUESTION", help="The question to answer."),
    pipeline: str = typer.Option(..., "--pipeline", "-p",
                                 help="Pipeline YAML file, saved pipeline folder or operator name (e.g. bm25)."),
    data: Optional[str] = typer.Option(None, "--data", help="Corpus to fit an unfitted pipeline on: a BEIR name or "
                                                            "folder, or a corpus.jsonl file."),
    top_k: Optional[int] = _ranged_option(None, "--top-k", lo=1, hi=MAX_INT,
                                          help="Chunks given to the LLM (default 5), when the pipeline has no "
                                               "generate step of its own."),
    mode: Optional[str] = typer.Option(None, help="KV reuse: full, prefix, naive or cachecraft (default), when the "
                                                  "pipeline has no generate step of its own."),
    max_new_tokens: Optional[int] = _ranged_option(None, "--max-new-tokens", lo=1, hi=MAX_INT,
                                                   help="Answer length in tokens (default 96), when the pipeline "
                                                        "has no generate step of its own."),
    cache_dir: Optional[Path] = _path_option(
        None, "--cache-dir", help="Folder of the chunk KV cache on disk, so that later asks reuse the chunks computed "
                                  "here (default: a folder named after the model under chunks/ in the ragkit cache, "
                                  "$RAGKIT_CACHE or ~/.cache/ragkit; used by the cachecraft and naive modes), when the "
                                  "pipeline has no generate step of its own."),
) -> None:
    """Answer a question with retrieval + a local LLM, streaming the answer's tokens.

    The pipeline's own ``generate`` step is used if it has one; otherwise one is appended
    (SmolLM2-135M-Instruct by default, with Cache-Craft chunk-cache reuse; the chunks' key/value
    rows are kept on disk, --cache-dir, so that a later ask reuses them).
    """
    from ragkit.generators.operator import NO_DOCUMENT, Generate
    from ragkit.pipelines import Pipeline
    from ragkit.pipelines._compose import iter_leaves

    if mode not in (None, "full", "prefix", "naive", "cachecraft"):
        raise typer.BadParameter(f"expected one of full, prefix, naive, cachecraft; got {mode!r}", param_hint="--mode")
    if is_blank(question):  # (empty, or whitespace and invisible characters only)
        raise typer.BadParameter("expected a question, got an empty one", param_hint="QUESTION")
    if cache_dir is not None and mode in ("full", "prefix"):  # (the folder and its manifest were made for nothing)
        raise typer.BadParameter(f"--mode {mode} uses no chunk cache, so the folder would stay unused; drop "
                                 "--cache-dir, or ask with --mode cachecraft or naive", param_hint="--cache-dir")
    given = {f: v for f, v in (("--top-k", top_k), ("--mode", mode), ("--max-new-tokens", max_new_tokens),
                               ("--cache-dir", cache_dir)) if v is not None}
    streamed = False
    found: Any = None  # the documents the answer reads, once the generate step names them: an interrupted one's
    try:
        pipe, fitted = resolve_pipeline(pipeline)
        _check_retrieves(pipe, f"--pipeline {pipeline}")  # before the fit and the LLM's load
        if not fitted and data is None:
            raise RagkitError(f"--pipeline {pipeline!r} is not a fitted (saved) pipeline, so it needs a corpus: "
                              f"pass --data <BEIR name or folder, or corpus.jsonl>")
        if fitted and data is not None:
            raise RagkitError(f"--data {data}: the pipeline {pipeline} is saved fitted and searches the corpus saved "
                              "with it; drop --data, or pass a pipeline YAML file to fit on that corpus")
        if fitted:
            corpus: Corpus = pipe.corpus_  # a saved pipeline loads with its corpus
        gens = [op for op in iter_leaves(pipe) if isinstance(op, Generate)]
        if gens and given:
            raise RagkitError(f"{', '.join(given)}: the pipeline {pipeline} has its own generate step, whose "
                              "parameters (top_k, mode, max_new_tokens, cache_dir) decide; set them there, or drop "
                              "the flags")
        if not gens:
            chunk_dir = str(cache_dir) if cache_dir is not None else None  # (generate's cache_dir: a str)
            if cache_dir is None and mode in (None, "cachecraft", "naive"):  # full and prefix use no chunk cache
                chunk_dir = _default_chunk_dir()
            chosen = {f: v for f, v in (("top_k", top_k), ("mode", mode), ("max_new_tokens", max_new_tokens),
                                        ("cache_dir", chunk_dir)) if v is not None}
            gens = [Generate(**{"max_new_tokens": 96, **chosen})]  # ask answers at more length than the default
            # its steps, not the pipeline as one step: the paths of fit and search errors stay the YAML's
            pipe = Pipeline([*pipe.steps, gens[0]] if not fitted else [pipe, gens[0]])
        for g in gens:  # a model path that does not exist is refused before the retrieval steps are fitted
            try:
                g.check_source()
            except ParamError as e:  # the flags' step: its fields named as the flags that set them
                raise _as_flag(e, given) from None
        _check_llm_packages(gens)
        if fitted:
            for g in gens:
                if not g.is_fitted:
                    g.fit(corpus)
        else:
            assert data is not None  # refused above
            corpus = _read_ask_corpus(data)
            with err_console.status(f"fitting the pipeline on {len(corpus):,} documents..."):
                pipe.fit(corpus)
        loaded = False

        def load_models() -> None:  # once a question has documents: none is loaded for one that matched nothing
            nonlocal loaded
            if loaded:
                return
            loaded = True
            with err_console.status("loading the language model..."), _quiet_model_loading():
                for g in gens:
                    load = getattr(getattr(g, "engine_", None), "load", None)
                    if load is not None:
                        try:
                            load()
                        except ParamError:  # a path that holds no model: bad input (2)
                            raise
                        except RagkitError as e:  # (its source was checked before the fit: a failure while running)
                            raise _RunFailure(str(e)) from None

        def sources(_qi: int, doc_ids: list[str]) -> None:  # the generate step's, before it answers: one retrieval
            nonlocal found
            found = doc_ids
            if len(doc_ids):
                load_models()

        def show(_qi: int, piece: str) -> None:
            nonlocal streamed
            streamed = True
            sys.stdout.write(piece)
            sys.stdout.flush()

        run = pipe.search([question], generate={"on_token": show, "on_sources": sources})
        if (run.values.get("answer_skipped") or [None])[0] == NO_DOCUMENT:
            raise RagkitError(f"no document of the {len(corpus):,} matched the question {question!r}, so there is "
                              "nothing to answer from (a bm25 step returns only documents that share a word with "
                              "it, stopwords aside); ask with the words the documents would use")
    except RagkitError as e:
        _fail(_in_file(e, pipeline))
        return
    except KeyboardInterrupt:  # Ctrl-C: end the partial answer's line, say so (the chunk cache writes whole files)
        if streamed:
            sys.stdout.write("\n")
            sys.stdout.flush()
        _say_interrupted()
        if found is not None and len(found):
            _print_sources(found, corpus)
        raise typer.Exit(code=130) from None
    sys.stdout.write("\n")
    sys.stdout.flush()
    cost = (run.values.get("prefill") or [None])[0]
    if cost is not None:  # what the answer's prefill cost and reused (stderr), then its sources, the last line
        err_console.print(Text(str(cost), style="dim"))
    if found is not None and len(found):  # the documents the generate step answered from, as when interrupted
        _print_sources(found, corpus)


#: ``ragkit ask``'s flags by the field of the generate step they set.
_ASK_FLAGS = {"top_k": "--top-k", "mode": "--mode", "max_new_tokens": "--max-new-tokens", "cache_dir": "--cache-dir"}


def _as_flag(e: ParamError, given: dict[str, Any]) -> ParamError:
    """``e`` (``generate.cache_dir: ...``) with the field named as the ``ragkit ask`` flag that set it
    (``--cache-dir ...``) when ``given`` holds that flag; unchanged otherwise (a pipeline's own step)."""
    message = str(e)
    for field, flag in _ASK_FLAGS.items():
        if message.startswith(f"generate.{field}:") and flag in given:
            rest = message[len(f"generate.{field}"):]
            value = f": {given[flag]}:"  # (``--cache-dir x: ...``, as the other options' errors read)
            rest = f" {given[flag]}:{rest[len(value):]}" if rest.startswith(value) else rest
            e.args = (f"{flag}{rest}", *e.args[1:])
    return e


def _print_sources(ids: Any, corpus: Corpus) -> None:
    """``ragkit ask``'s dim line naming the documents the answer read: id (title or text, cut)."""
    rows = corpus.row_of(list(ids), missing="drop")
    console.print(Text("sources: " + "; ".join(f"{d} ({_cut(corpus.titles[r] or corpus.texts[r], 60)})"
                                               for d, r in zip(ids, rows)), style="dim"), soft_wrap=True)


def _cut(text: str, n: int) -> str:
    """``text`` on one line, cut to at most ``n`` characters, with "…" (counted) where it was cut and no
    space before it."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"
