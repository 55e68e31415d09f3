"""Domain adaptation of a sentence-transformers encoder on judged training queries.

Fine-tunes the model with sentence-transformers' own trainer and the multiple-negatives
ranking loss (in-batch negatives plus mined hard negatives; Henderson et al. 2017, as in
Reimers & Gurevych's training recipes).  Hard negatives are the best-ranked unjudged
documents for each training query under BM25 and under the current model, alternating,
so the model learns both lexical and semantic confusions.  Seeded; the tuned model is
written to a folder (temporary name renamed into place) whose content fingerprint keys
the embedding cache, so cached vectors of the base model are never reused for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import Field

from ragkit._files import shared_tempdir
from ragkit._locks import MODEL_LOADING
from ragkit.errors import DataError, MissingExtraError, missing_extra
from ragkit.params import Params, Seed
from ragkit.types import Corpus, TrainSet

__all__ = ["AdaptConfig", "mine_pairs", "fine_tune", "adapted_model", "TunedEncoderMixin"]

_log = logging.getLogger(__name__)

#: fewer usable training queries (a relevant document in the corpus) than this, and an ``adapt`` fit warns
#: (the threshold of the Cosine Adapter's warning)
MIN_QUERIES = 10
_MINE_DEPTH = 30  # ranks of each miner (BM25, current model) searched for hard negatives
# Version of the training recipe (mining, triplets, loss, trainer settings that are not in
# AdaptConfig): part of the cache key, so bump it when a code change alters what a fine-tune learns.
_RECIPE = 2  # 2: judged non-relevant documents are the first negatives


class AdaptConfig(Params):
    """Fine-tuning settings: the ``adapt`` parameter of ``dense`` and of the token operators (``muvera``, ...)."""

    epochs: float = Field(default=1.0, gt=0, description="Passes over the (query, positive, hard negative) triplets.")
    batch_size: int = Field(
        default=32, ge=2, description="Triplets per step; the batch's other positives are in-batch negatives.")
    learning_rate: float = Field(default=2e-5, gt=0, description="AdamW learning rate.")
    hard_negatives: int = Field(
        default=1, ge=1, description="Mined negatives per (query, positive) pair, one triplet each.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimiser steps (tests use a few).")
    seed: Seed = Field(default=0, description="Seed of the trainer, the data order and the initialisation.")


def mine_pairs(corpus: Corpus, train: TrainSet, model: str, n_neg: int = 1, depth: int = _MINE_DEPTH, seed: int = 0,
               ) -> tuple[list[str], list[str], list[str]]:
    """(query, positive, hard negative) texts, ``n_neg`` negatives per (query, positive).

    Negatives are the query's documents judged non-relevant (a qrels value <= 0: known
    negatives, in qrels order) first, then unjudged documents from the top ``depth`` ranks of
    BM25 and of the current model, interleaved best ranks first.  Batched: one BM25 search and
    one dense search for all training queries.  A query without any gets a random (seeded)
    document that is not one of its positives; a query whose every document is a positive
    gives no triplet.
    """
    from ragkit.retrievers import BM25, Dense

    judged_pos = {q: [d for d, v in train.qrels.get(q, {}).items() if v > 0] for q in train.queries.ids}
    qids = [q for q in train.queries.ids if judged_pos[q]]
    if not qids:
        raise DataError("fine-tuning needs training queries with at least one positive judgement; got none")
    in_corpus = {q: corpus.row_of(judged_pos[q], missing="drop") for q in qids}
    qids = [q for q in qids if len(in_corpus[q])]
    if not qids:
        some = next(iter(judged_pos[q] for q in judged_pos if judged_pos[q]))[0]
        raise DataError(f"fine-tuning: none of the training queries' positive documents is in the corpus of "
                        f"{len(corpus):,} documents (e.g. {some!r}); expected qrels that name this corpus's ids")
    rng = np.random.default_rng(seed)
    position = {q: i for i, q in enumerate(train.queries.ids)}
    queries = train.queries[[position[q] for q in qids]]
    runs = [BM25(k=depth).fit(corpus).search(queries), Dense(k=depth, model=model).fit(corpus).search(queries)]
    texts = corpus.full_texts
    anchors, positives, negatives = [], [], []
    for i, q in enumerate(qids):
        pos_rows = in_corpus[q]
        judged = set(train.qrels[q])
        known = [d for d, v in train.qrels[q].items() if v <= 0]
        cands = corpus.row_of(known, missing="drop").tolist() if known else []
        for depth_i in range(depth):  # interleave the two rankings, best ranks first
            for run in runs:
                ids = run.doc_ids[i]
                if depth_i < len(ids) and ids[depth_i] not in judged:
                    assert run.rankings is not None, "a search's run holds its rankings"
                    row = int(run.rankings[i].rows[depth_i])
                    if row not in cands:
                        cands.append(row)
        negs = cands[:n_neg]
        if not negs:  # every top-ranked document is judged: any document but a positive
            others = np.setdiff1d(np.arange(len(corpus)), pos_rows)
            if not len(others):
                continue
            negs = [int(rng.choice(others))]
        for p in pos_rows.tolist():
            for n in negs:
                anchors.append(queries.texts[i])
                positives.append(texts[p])
                negatives.append(texts[n])
    return anchors, positives, negatives


#: the packages a fine-tune needs beyond ragkit's own (``accelerate`` for transformers' Trainer): the ``train`` extra
TRAIN_PACKAGES = ("datasets", "accelerate")


def _train_refusal(where: str = "", *, unless_cached: bool = False) -> MissingExtraError | None:
    """The :class:`~ragkit.errors.MissingExtraError` naming ragkit's ``train`` extra when a package the fine-tune
    needs (:data:`TRAIN_PACKAGES`) is not installed (its message starting with ``where: `` when given), else None.
    ``unless_cached``: said where whether the fine-tune is cached is not known (no corpus and training split to
    find it by: ``ragkit validate``), so that it stays true when it is (``..., not installed, unless this fine-tune
    is already cached: pip install ...``)."""
    unless = ", unless this fine-tune is already cached" if unless_cached else ""
    return missing_extra(TRAIN_PACKAGES, extra="train", what=lambda named: f"{where}: " * bool(where)
                         + f"fine-tuning (adapt) needs {named}, not installed{unless}")


def _check_train_packages() -> None:
    """Raise :class:`~ragkit.errors.MissingExtraError` (an ``ImportError``) naming ragkit's ``train`` extra when a
    package the fine-tune needs (``datasets``, and ``accelerate`` for transformers' Trainer) is not installed."""
    refusal = _train_refusal()
    if refusal is not None:
        raise refusal


@contextmanager
def _quiet_training() -> Iterator[None]:
    """No progress bars of the libraries while a fine-tune runs: transformers' (loading and writing the
    weights), datasets' and the model card's "Computing widget examples" (sentence-transformers draws it with a
    plain tqdm while the trainer is built); restored afterwards.  The trainer's own bar and its printed metrics
    are its arguments' and callbacks' (:func:`fine_tune`)."""
    import importlib

    from ragkit._progress import quiet_progress

    datasets: Any = None
    try:
        datasets = importlib.import_module("datasets")
    except ImportError:  # (fine_tune then says to install it)
        pass
    data_bars = datasets is not None and not datasets.are_progress_bars_disabled()
    if data_bars:
        datasets.disable_progress_bars()
    try:
        with quiet_progress("sentence_transformers.base.model_card"):
            yield
    finally:
        if data_bars:
            datasets.enable_progress_bars()


def fine_tune(model: str, corpus: Corpus, train: TrainSet, out_dir: str | Path, config: AdaptConfig = AdaptConfig(),
              *, progress: bool | None = None) -> Path:
    """Fine-tune ``model`` on ``train`` and save it to ``out_dir``; returns the folder.

    Shows the trainer's progress bar (its steps, on stderr: a fine-tune takes minutes on a CPU), nothing
    else: no progress bar of the other libraries (loading and writing the weights, the datasets) and no
    metrics dict of the trainer (``{'train_runtime': ...}``), nothing on stdout, so a program's or a
    command's output is its own (``adapted_model`` logs one line on the ``ragkit`` logger before a
    fine-tune).  ``progress=False``: no bar either.  ``None`` (the default) is ``True``, as the sentence
    encoder shows a bar for a long encoding, except under a ``rich`` live display that holds stderr (the
    command line's spinner on a terminal), which would print the bar as a blank line.  The training
    queries' negatives are mined with the model first, which shows the encoder's own bar for a corpus of
    more than 1,000 documents."""
    _check_train_packages()
    with _quiet_training():
        return _fine_tune(model, corpus, train, Path(out_dir), config, _bar_seen() if progress is None else progress)


def _bar_seen() -> bool:
    """Whether a progress bar drawn on ``sys.stderr`` would be seen: not while a ``rich`` live display (the
    command line's "fitting..." spinner, on a terminal) holds it, whose proxy turns a bar into a blank line
    (the command line says "note: fine-tuning ..." beside its spinner instead)."""
    import sys

    try:
        from rich.file_proxy import FileProxy
    except ImportError:  # pragma: no cover - rich comes with typer
        return True
    return not isinstance(sys.stderr, FileProxy)


def _fine_tune(model: str, corpus: Corpus, train: TrainSet, out_dir: Path, config: AdaptConfig,
               progress: bool) -> Path:
    import torch

    # the sentence_transformer.* modules: sentence-transformers 5.4 on (6.x warns on the older paths)
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from tqdm.auto import tqdm
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from ragkit.encoders.sentence import resolve_model, role_prompt

    anchors, positives, negatives = mine_pairs(corpus, train, model, n_neg=config.hard_negatives, depth=_MINE_DEPTH,
                                               seed=config.seed)
    if not anchors:
        raise DataError("fine-tuning: no (query, positive, negative) triplet could be formed: every document of the "
                        "corpus is a positive of the training queries that have one")
    torch.manual_seed(config.seed)
    with MODEL_LOADING:  # (transformers patches globals while it loads)
        st = SentenceTransformer(resolve_model(model), device="cpu")
    data = Dataset.from_dict({"anchor": anchors, "positive": positives, "negative": negatives})
    # the prompts the encoder puts before queries and documents (an e5-style model's "query: " / "passage: "), so
    # that the model is tuned on the texts it will be given (none for MiniLM: as before)
    st_config = {"prompts": dict(getattr(st, "prompts", None) or {}),
              "default_prompt_name": getattr(st, "default_prompt_name", None)}
    query_prompt, document_prompt = role_prompt(st_config, "query"), role_prompt(st_config, "document")
    prompts = ({"anchor": query_prompt, "positive": document_prompt, "negative": document_prompt}
               if query_prompt or document_prompt else None)
    with tempfile.TemporaryDirectory(prefix="ragkit-adapt-") as work:
        args = SentenceTransformerTrainingArguments(
            output_dir=work, num_train_epochs=config.epochs, per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate, warmup_steps=0, seed=config.seed, data_seed=config.seed,
            batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no", logging_strategy="no", report_to="none",
            max_steps=config.max_steps if config.max_steps is not None else -1, disable_tqdm=not progress,
            dataloader_num_workers=0, use_cpu=True, prompts=prompts,
        )
        trainer = SentenceTransformerTrainer(model=st, args=args, train_dataset=data,
                                             loss=MultipleNegativesRankingLoss(st))
        # the trainer prints its final metrics ({'train_runtime': ...}) on stdout whatever logging_strategy says:
        # PrinterCallback with disable_tqdm, ProgressCallback's bar (to stderr, when progress is asked for) besides
        trainer.remove_callback(PrinterCallback)
        if progress:
            class BarOnly(ProgressCallback):
                def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                    if state.is_world_process_zero:  # as ProgressCallback's, saying what it counts from its first
                        self.training_bar = tqdm(total=state.max_steps, dynamic_ncols=True,  # draw
                                                 desc=f"fine-tuning {model}")
                    self.current_step = 0

                def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
                    return None  # (ProgressCallback writes the metrics under its bar, on stdout)

            trainer.remove_callback(ProgressCallback)
            trainer.add_callback(BarOnly())
        trainer.train()
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = shared_tempdir(out_dir.parent, f".{out_dir.name}.tmp-")  # a model folder is shared like any other
        st.save(str(tmp))
        _publish(tmp, out_dir)
    return out_dir


def _publish(tmp: Path, out_dir: Path) -> None:
    """Rename the finished model folder ``tmp`` to ``out_dir``.  The name is a content key, so a
    folder already there (another process trained the same inputs) is kept, never deleted under
    a reader; a half-written one (no ``modules.json``) is replaced."""
    if out_dir.exists() and not (out_dir / "modules.json").is_file():
        shutil.rmtree(out_dir, ignore_errors=True)
    try:
        os.replace(tmp, out_dir)
    except OSError:
        if not (out_dir / "modules.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another writer published the same content first


def _training_digest(model_key: str, corpus: Corpus, train: TrainSet, config: AdaptConfig) -> str:
    """Content hash of everything a fine-tune depends on: base model, corpus, judged queries, settings,
    and the code that trains (the recipe version, the mining depth, sentence-transformers' and torch's
    versions), so a cached model is never one an older recipe trained."""
    import sentence_transformers
    import torch

    from ragkit.encoders.cache import text_digests

    h = hashlib.sha1()
    h.update(model_key.encode())
    h.update(f"recipe={_RECIPE}|depth={_MINE_DEPTH}|st={sentence_transformers.__version__}|"
             f"torch={torch.__version__}".encode())
    h.update(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode())
    h.update("\x00".join(corpus.ids.tolist()).encode())
    h.update(text_digests(corpus.full_texts).tobytes())
    h.update(json.dumps([train.queries.ids, train.queries.texts], ensure_ascii=False).encode())
    h.update(json.dumps({str(q): {str(d): int(v) for d, v in sorted(r.items())}
                         for q, r in sorted(train.qrels.items())}).encode())
    return h.hexdigest()[:20]


def adapted_model(model: str, corpus: Corpus, train: TrainSet, config: AdaptConfig = AdaptConfig(),
                  *, progress: bool | None = None) -> Path:
    """Folder of ``model`` fine-tuned on ``train``, trained once and cached.

    The cache folder (``$RAGKIT_CACHE/models/adapt-<hash>``) is keyed by the base model's
    content fingerprint, the corpus, the training queries and judgements, and ``config``;
    a second fit with the same inputs loads the tuned model instead of training again (and
    prints nothing).  A fine-tune that trains shows the trainer's progress bar on stderr
    unless ``progress=False`` (:func:`fine_tune`).
    """
    folder = _adapted_folder(model, corpus, train, config)
    if not (folder / "modules.json").is_file():
        _log.info("fine-tuning %s on %d judged training queries over %s documents (minutes on a CPU; trained once, "
                  "cached in %s)", model, len(train.qrels), f"{len(corpus):,}", folder)
        fine_tune(model, corpus, train, folder, config, progress=progress)
    return folder


def _adapted_folder(model: str, corpus: Corpus, train: TrainSet, config: AdaptConfig) -> Path:
    """The cache folder of ``model`` fine-tuned on ``train`` with ``config`` (:func:`adapted_model`; loads the
    base model's encoder for its content key, and hashes the corpus and the training split)."""
    from ragkit.encoders.sentence import get_encoder
    from ragkit.eval.beir import cache_dir

    key = _training_digest(get_encoder(model).key, corpus, train, config)
    return cache_dir() / "models" / f"adapt-{key}"


class _TunedParams(Protocol):
    """What :class:`TunedEncoderMixin` reads of its operator's parameters."""

    @property
    def model(self) -> str: ...

    @property
    def adapt(self) -> AdaptConfig | None: ...


class TunedEncoderMixin:
    """For operators whose params have ``model`` and ``adapt``: the encoder tuned at fit, saved with them.

    ``_adapt_encoder(corpus, train)`` (in ``_fit``) sets ``model_path_`` to the cached tuned
    model, or ``None`` without ``adapt``; ``encoder_model`` is what the encoder should load;
    ``_save_encoder`` copies the tuned model into the operator's folder (``model/``) and
    ``_load_encoder`` reads it back, so a saved operator needs neither the cache nor training.
    Operators with the same base model, corpus, training split and ``adapt`` settings share
    one tuned model (the cache key), trained once.
    """

    params: _TunedParams
    name: ClassVar[str]
    model_path_: str | None  # set by _adapt_encoder / _load_encoder

    @property
    def encoder_model(self) -> str:
        """Model name or folder for the encoder: the tuned copy after an ``adapt`` fit."""
        return getattr(self, "model_path_", None) or self.params.model

    @property
    def needs_train(self) -> bool:
        """Fine-tuning needs judged queries."""
        return self.params.adapt is not None

    def train_refusal(self) -> Exception | None:
        """Fine-tuning without judged queries is refused (see :meth:`Operator.train_refusal`)."""
        if not self.needs_train:
            return None
        return DataError(f"{self.name}.adapt fine-tunes the encoder on judged queries, but fit() got no training "
                         "split; call fit(corpus, train=TrainSet(queries, qrels)) (command line: --train-split) or "
                         "drop 'adapt'")

    def check_ready(self, corpus: Corpus | None = None, train: TrainSet | None = None) -> None:
        """Refuse, with :class:`~ragkit.errors.MissingExtraError`, an ``adapt`` fit on ``corpus`` and ``train`` that
        would fine-tune where the ``train`` extra's packages are not installed, before any work of its fit, or of
        any step of a pipeline's (:meth:`Operator.fit <ragkit.operator.Operator.fit>`,
        :func:`~ragkit.pipelines._checks.check_trainable`); a tuned model already cached for them (the same base
        model, corpus, training split and settings) needs none, and is not refused.  Without ``corpus`` or
        ``train`` (``ragkit validate``'s notes: no data to find the cached model by) the missing packages are
        refused all the same, in words that stay true when the fine-tune is cached (``..., unless this fine-tune
        is already cached: pip install 'ragkit[train]'``); a fit never asks so (one without a training split is
        refused first, by :meth:`train_refusal`).  A fitted operator asked without either (``ragkit validate`` of a
        saved, fitted folder) is not refused: it holds its tuned model, and searching it never fine-tunes.
        Without ``adapt``, or with a registered custom encoder (refused by the fit, with its own message),
        nothing is refused.  Cheap when the packages are there;
        without them, finding the cached model loads the base model's encoder and hashes the corpus."""
        config = self.params.adapt
        if config is None:
            return
        if corpus is None and train is None and getattr(self, "is_fitted", False):  # (its tuned model held: saved)
            return
        from ragkit.encoders.custom import registered_encoder

        if registered_encoder(self.params.model) is not None:  # (refused by the fit, with its own message)
            return
        known = corpus is not None and train is not None  # (whether a tuned model is cached can be looked up)
        refusal = _train_refusal(f"{self.name}.adapt", unless_cached=not known)
        if refusal is None:
            return
        if corpus is not None and train is not None and (
                _adapted_folder(self.params.model, corpus, train, config) / "modules.json").is_file():
            return
        raise refusal

    def _adapt_encoder(self, corpus: Corpus, train: TrainSet | None) -> None:
        config = self.params.adapt
        if config is None:  # not needs_train
            self.model_path_ = None
            return
        # refusals come before any state changes: a refused refit keeps the tuned model that the
        # index was built with (resetting it first left base-model queries against tuned documents);
        # fit without judged queries never gets here (Operator.fit raises train_refusal first)
        assert train is not None
        from ragkit.encoders.custom import registered_encoder
        from ragkit.errors import ParamError

        if registered_encoder(self.params.model) is not None:
            raise ParamError(f"{self.name}.adapt: model {self.params.model!r} is a registered custom encoder; adapt "
                             "fine-tunes a sentence-transformers model (a name or folder)", path=f"{self.name}.adapt")
        n_usable = len(train.usable(corpus))
        if n_usable < MIN_QUERIES:
            logging.getLogger("ragkit").warning(
                "%s.adapt: fine-tuning on little: %d usable training quer%s (with a relevant document in the corpus; "
                "at least %d recommended); the tuned encoder may fit those few queries rather than the corpus's "
                "domain: give more judged queries, or drop adapt", self.name, n_usable,
                "y" if n_usable == 1 else "ies", MIN_QUERIES)
        self.model_path_ = str(adapted_model(self.params.model, corpus, train, config, progress=None))

    def _save_encoder(self, folder: Path) -> None:
        """Copy the tuned model to ``model/<its content key>/``: a path names one model, so an
        encoder cached per path in this process is never the one of an earlier save."""
        path: str | None = getattr(self, "model_path_", None)
        if path:
            shutil.copytree(path, folder / "model" / Path(path).name)

    def _load_encoder(self, folder: Path) -> None:
        from ragkit.errors import ArtifactError

        found = sorted(p.parent for p in (folder / "model").glob("*/modules.json"))
        if (folder / "model" / "modules.json").is_file():  # saved before the content-named layout
            found.insert(0, folder / "model")
        self.model_path_ = str(found[0]) if found else None
        if self.params.adapt is not None and self.model_path_ is None:
            raise ArtifactError(f"{folder}: {self.name} was fitted with adapt but the tuned model folder "
                                f"{folder / 'model'} is missing")
