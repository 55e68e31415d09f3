"""ragkit: small retrieval operators that compose.

Dense retrieval over quantized usearch indexes, BM25, MUVERA multi-vector retrieval,
learned relevance filtering, hubness correction, multi-interest retrieval, chunk
KV-cache reuse for generation; linear, branching, conditional and looping pipelines in
Python or YAML; BEIR evaluation.

Two names are plain objects, whose ``help()`` is their type's (dict's, RLock's):

``Qrels``
    Relevance judgements, ``{query_id: {doc_id: grade}}`` (``dict[str, dict[str, int]]``), as BEIR and
    pytrec_eval write them.
``MODEL_LOADING``
    The process-wide re-entrant lock (``threading.RLock``) ragkit holds around each model load it makes;
    hold it around your own ``from_pretrained`` on another thread (two loads at once can leave
    transformers' patched globals patched for good).
"""

# ``encoders`` and ``eval``: subpackages ``import ragkit`` loads anyway, named here so that type checkers know them
# as attributes (``ragkit.encoders.caching_queries()``); not in ``__all__``: ``eval`` would shadow the builtin in
# ``from ragkit import *``.  ``MODEL_LOADING``: the reentrant lock (one per process) ragkit holds around each model
# load it makes (the LLM, sentence encoders): transformers patches globals while it loads (weight tying off), and
# two loads at once on threads can leave them patched for good; hold it around a ``from_pretrained`` of your own
# on another thread (the same lock as ``ragkit._locks.MODEL_LOADING``).
from ragkit import encoders as encoders, eval as eval
from ragkit._locks import MODEL_LOADING
from ragkit.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ConfigError,
    DataError,
    InputTypeError,
    MissingExtraError,
    NotFittedError,
    ParamError,
    RagkitError,
)
from ragkit.eval import BeirDataset, EvalResult, beir_subsets, evaluate, load_beir
from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.pipelines import Loop, Parallel, Pipeline, Route, Sequence  # noqa: F401  (Sequence: not in __all__)
from ragkit.run import Run
from ragkit.types import Corpus, Qrels, Queries, Ranking, State, TrainSet


def _version() -> str:
    """The installed distribution's version (``pyproject.toml`` holds the only copy); in a source tree that is
    not installed, the ``version`` line of its ``pyproject.toml``."""
    import importlib.metadata
    import re
    from pathlib import Path

    try:
        return importlib.metadata.version("ragkit")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return "0+unknown"
    found = re.search(r'^name = "ragkit"\s*$.*?^version = "([^"]+)"', text, re.M | re.S)
    return found.group(1) if found else "0+unknown"


__version__ = _version()

# (``Sequence``, an alias of Pipeline, is importable by name but left out of ``from ragkit import *``: it would
# shadow ``typing.Sequence`` / ``collections.abc.Sequence`` in the importing module)
__all__ = [
    "__version__", "Operator", "Params", "Run", "Corpus", "Queries", "Qrels", "Ranking", "State", "TrainSet",
    "Pipeline", "Parallel", "Route", "Loop", "evaluate", "EvalResult", "load_beir", "BeirDataset", "beir_subsets",
    "RagkitError", "ParamError", "ConfigError", "DataError", "NotFittedError", "ArtifactError",
    "ArtifactNotFoundError", "InputTypeError", "MissingExtraError", "MODEL_LOADING",
]
