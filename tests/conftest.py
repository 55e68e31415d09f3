"""Shared fixtures: SciFact and small slices of it (fast), judged queries for learners."""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import json
import os
import runpy
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
#: the checkout's SciFact copy (CI's), looked at first
SHARED_SCIFACT = REPO.parent / "shared" / "data" / "beir" / "scifact"


def find_scifact(env: str | None = None, shared: Path = SHARED_SCIFACT) -> Path | None:
    """The SciFact folder the tests read: ``env`` ($RAGKIT_SCIFACT) when set (checked by the caller), else
    ``shared`` (the checkout's copy) when it exists, else where ``load_beir("scifact")`` finds it without
    downloading (``$RAGKIT_CACHE/beir/scifact``, where ``ragkit eval --data scifact`` downloaded it; the
    ``shared/data/beir`` folders above the working one); ``None`` when none holds all of it."""
    if env:
        return Path(env)
    if shared.is_dir():
        return shared
    from ragkit.errors import DataError
    from ragkit.eval._layout import _lacks
    from ragkit.eval.beir import _find

    try:
        found = _find("scifact", "scifact", download=False, base_url=None)
    except DataError:
        return None
    return None if _lacks(found) else found  # (an incomplete download: `ragkit eval --data scifact` replaces it)


def scifact_missing(env: str | None, found: Path | None, shared: Path = SHARED_SCIFACT) -> str | None:
    """Why the tests cannot run for want of SciFact (``found``: :func:`find_scifact`'s answer), or ``None``."""
    if found is not None and found.is_dir():
        return None
    get = ("run `ragkit eval --data scifact --pipeline bm25 --limit 1` once (it downloads SciFact into "
           "$RAGKIT_CACHE/beir/scifact, where the tests find it), or set RAGKIT_SCIFACT to a SciFact BEIR folder")
    if env:
        return (f"SciFact not found at {env} (RAGKIT_SCIFACT): set RAGKIT_SCIFACT to a SciFact BEIR folder, or unset "
                f"it to use {shared} or the copy `ragkit eval --data scifact` downloads")
    return f"SciFact not found: not at {shared}, nor where load_beir('scifact') looks without downloading; {get}"


_FOUND = find_scifact(os.environ.get("RAGKIT_SCIFACT"))
SCIFACT = _FOUND if _FOUND is not None else SHARED_SCIFACT


def pytest_collection_modifyitems(config, items):
    missing = scifact_missing(os.environ.get("RAGKIT_SCIFACT"), _FOUND)
    if missing is not None:
        raise pytest.UsageError(missing)


@pytest.fixture(scope="session")
def scifact():
    """The full SciFact dataset (5,183 documents)."""
    from ragkit import load_beir

    return load_beir(SCIFACT)


@pytest.fixture(scope="session")
def slice_data(scifact):
    """A ~250-document slice with 12 test and 40 train queries whose relevant documents are in it.

    Returns ``(corpus, test_queries, test_qrels, train_set)``.
    """
    from ragkit.types import TrainSet

    test_q, test_rel = scifact.queries("test")[:12], scifact.qrels("test")
    train_q, train_rel = scifact.queries("train")[:40], scifact.qrels("train")
    rel_ids = {d for q in test_q.ids for d in test_rel[q]} | {d for q in train_q.ids for d in train_rel[q]}
    rows = sorted(set(range(200)) | set(scifact.corpus.row_of(rel_ids).tolist()))
    corpus = scifact.corpus.subset(np.array(rows))
    # metadata for filter tests: a deterministic "year"-like field
    corpus = type(corpus)(ids=corpus.ids, texts=corpus.texts, titles=corpus.titles,
                          metadata={"bucket": np.array([i % 3 for i in range(len(corpus))], dtype=object)})
    qrels = {q: test_rel[q] for q in test_q.ids}
    train = TrainSet(train_q, {q: train_rel[q] for q in train_q.ids})
    return corpus, test_q, qrels, train


@pytest.fixture(scope="session")
def slice_beir(slice_data, tmp_path_factory):
    """``slice_data`` written as a BEIR folder (train and test qrels), for command-line tests."""
    from ragkit.eval import write_beir

    corpus, test_q, test_qrels, train = slice_data
    queries = dict(zip(train.queries.ids, train.queries.texts)) | dict(zip(test_q.ids, test_q.texts))
    return write_beir(tmp_path_factory.mktemp("beir") / "scifact-slice", corpus, queries,
                      {"train": train.qrels, "test": test_qrels})


class HashedEncoder:
    """A model-free encoder for tests: each text's vector is drawn from a seed hashed from the text
    (``dim`` float32 coordinates), unit length, or of a norm drawn from 0.5..3.5 (``unit=False``: for
    code that must normalise itself)."""

    def __init__(self, key: str, dim: int, unit: bool = True) -> None:
        self.key, self.dim, self.unit = key, dim, unit

    def encode(self, texts, **kw):  # noqa: ANN001, ANN003, ANN201
        import zlib

        out = np.empty((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            rng = np.random.default_rng(zlib.crc32(t.encode()))
            v = rng.standard_normal(self.dim)
            out[i] = v / np.linalg.norm(v) * (1.0 if self.unit else rng.uniform(0.5, 3.5))
        return out

    encode_queries = encode


def traced_peak(fn):  # noqa: ANN001, ANN201
    """``(fn(), bytes tracemalloc saw allocated at the peak of the call beyond what was held before it)``."""
    import tracemalloc

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def file_mapped(a: np.ndarray) -> bool:
    """Whether ``a`` reads from a memory-mapped file (a view, or a view of a view, of an
    ``np.load(mmap_mode=...)`` array: scipy's sparse matrices keep such views)."""
    import mmap

    base = a
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base is not None


@contextmanager
def switching_often(seconds: float = 1e-5) -> Iterator[None]:
    """Threads swap every ``seconds`` (CPython's default 5 ms hides most races of a few bytecodes)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def race(threads: list[threading.Thread], join_s: float = 60.0) -> None:
    """Start ``threads`` together with threads swapping often (:func:`switching_often`), and wait for them
    (``join_s`` seconds each at most: a deadlock fails the test's own checks rather than hanging the run)."""
    with switching_often():
        for t in threads:
            t.start()
        for t in threads:
            t.join(join_s)


def word_corpus(n: int, offset: int = 0, words_per_doc: int = 8, **metadata: list):
    """``n`` documents of ``words_per_doc`` words over a 40-word vocabulary (ids ``d<offset + i>``), model-free."""
    from ragkit.types import Corpus

    rng = np.random.default_rng(offset)
    words = np.array([f"w{i}" for i in range(40)])
    texts = [" ".join(rng.choice(words, size=words_per_doc)) for _ in range(n)]
    return Corpus.from_texts(texts, ids=[f"d{offset + i}" for i in range(n)], **metadata)


def assert_same_but_near_ties(got, want, atol: float = 1e-5) -> None:
    """``got`` and ``want``: ``(slots, scores)`` of an index search (``(n, k)`` arrays each).  The same scores
    within ``atol`` and the same slots, except that slots whose scores tie within ``atol`` may come in another
    order, or trade places at the k-th score: BLAS rounds a dot product by the shape of the product it is
    computed in (OpenBLAS 0.3.31 gives a block read in place and the same rows gathered a last bit apart), so
    two paths over the same vectors agree to float32 rounding, not bit for bit.  A slot ``want`` did not rank
    is taken at ``want``'s last score (its true score is not known here): for two searches of one index."""
    (gs, gv), (ws, wv) = (tuple(np.asarray(a) for a in got)), (tuple(np.asarray(a) for a in want))
    assert gs.shape == ws.shape and gv.shape == wv.shape, (gs.shape, ws.shape)
    np.testing.assert_allclose(gv, wv, rtol=0, atol=atol)
    for r in range(len(gs)):  # each slot once a row (-1 pads)
        live = gs[r][gs[r] >= 0]
        assert len(np.unique(live)) == len(live), (r, gs[r])
    for r in np.flatnonzero((gs != ws).any(axis=1)):
        score_of = dict(zip(ws[r].tolist(), wv[r].tolist()))
        last = wv[r][ws[r] >= 0].min(initial=np.inf)
        for j in np.flatnonzero(gs[r] != ws[r]):
            s = score_of.get(int(gs[r, j]), last)  # a slot want did not rank: it tied want's last one
            assert abs(s - gv[r, j]) <= atol or s == gv[r, j], (r, j, gs[r, j], s, gv[r, j])
            assert abs(wv[r, j] - gv[r, j]) <= atol or wv[r, j] == gv[r, j], (r, j, wv[r, j], gv[r, j])


def ranked(run, decimals: int = 6) -> tuple[list[list[str]], list[list[float]]]:
    """A run's document ids and its scores rounded to ``decimals``, per query: what two runs compare by."""
    return [list(d) for d in run.doc_ids], [np.round(np.asarray(s), decimals).tolist() for s in run.scores]


def ray_session(num_cpus: int):
    """A fixture's body: a local Ray on ``num_cpus`` CPUs, yielded, then shut down (skipped when Ray is missing or
    already running in this process)."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("Ray already running in this process")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray on 2 CPUs, shut down after the module's tests (skipped when Ray is missing or already running)."""
    yield from ray_session(2)


@contextmanager
def scripts_of(folder: Path) -> Iterator[None]:
    """Run scripts of ``folder`` (examples/ or bench/) within: no ``_common`` of another folder loaded; after,
    ``sys.path`` and ``sys.modules`` as before (the modules loaded from ``folder`` removed, an earlier
    ``_common`` put back).  examples/ and bench/ each have a module named ``_common``: one must not stand in
    for the other in a later test."""
    path_before, before, common = list(sys.path), set(sys.modules), sys.modules.pop("_common", None)
    try:
        yield
    finally:
        sys.path[:] = path_before
        for name in set(sys.modules) - before:
            if Path(getattr(sys.modules[name], "__file__", "") or "/").resolve().is_relative_to(folder):
                del sys.modules[name]
        if common is not None:
            sys.modules["_common"] = common


def run_script(path: Path, *args: str, must_exit: bool = False) -> tuple[object, str, str]:
    """Run the script ``path`` in-process with ``args`` (:func:`scripts_of` its folder): ``(exit code or None,
    stdout, stderr)``; ``must_exit``: fail the test unless it ends in ``SystemExit``."""
    argv, out, err, code = sys.argv, io.StringIO(), io.StringIO(), None
    sys.argv = [str(path), *args]
    try:
        with scripts_of(path.resolve().parent), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(path), run_name="__main__")
        if must_exit:
            pytest.fail(f"{path.name} {' '.join(args)} ended without SystemExit")
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def run_example(path: Path, *args: str) -> tuple[object, str, str]:
    """Run the example script ``path`` in-process on SciFact with ``args`` (:func:`run_script`)."""
    return run_script(path, "--data", str(SCIFACT), *args)


# ---------------------------------------------------------------------- every registered operator, where it works
#: what a reranker, filter, router, judge or generator runs after unless its class names ``upstream_example``
UPSTREAM_DEFAULT = [{"bm25": {"k": 20}}]
#: the body of the loop a judge ends (pseudo-relevance feedback, then BM25 again), and its most rounds: three,
#: so that a judge remembering the previous round (``topk_stable``) can stop a query at the second
LOOP_BODY = [{"prf": {"fb_docs": 5, "fb_terms": 10}}, {"bm25": {"k": 20}}]
LOOP_MAX_ITERS = 3


def example_node(cls) -> dict:  # noqa: ANN001
    """The registered operator ``cls`` as a pipeline-file node with its ``example`` parameters."""
    return {cls.name: dict(cls.example)}


def example_upstream(cls) -> list[dict]:  # noqa: ANN001
    """The steps ``cls`` runs after in :func:`example_pipeline`: none for a retriever, else its class's
    ``upstream_example`` (default :data:`UPSTREAM_DEFAULT`)."""
    if cls.kind == "retriever":
        return []
    return list(getattr(cls, "upstream_example", UPSTREAM_DEFAULT))


def example_pipeline(cls):  # noqa: ANN001, ANN201
    """The operator (example params) where it works: a fuser as a parallel's ``fuse``, a router as
    a route's ``router`` (a branch per label it can give), a judge as a loop's ``until``, any other
    after the upstream it needs and before the steps that read it (its class's ``downstream_example``: a
    ``prf`` is read by a ``bm25`` after it) (the conformance and degenerate-data suites both build it so)."""
    from ragkit.pipelines.yaml import load_yaml

    if cls.kind == "fuser":
        return load_yaml({"pipeline": [{"parallel": {
            "branches": [{"bm25": {"k": 20}}, {"bm25": {"k": 20, "variant": "okapi", "k1": 1.5, "b": 0.75}}],
            "fuse": example_node(cls)}}]})
    if cls.kind == "router":
        labels = cls(**cls.example).possible_labels()
        branches = {label: [{"top_k": {"k": 3 + i}}] for i, label in enumerate(labels)}
        return load_yaml({"pipeline": [*example_upstream(cls), {"route": {"router": example_node(cls),
                                                                          "branches": branches}}]})
    if cls.kind == "judge":
        return load_yaml({"pipeline": [*example_upstream(cls), {"loop": {
            "body": LOOP_BODY, "until": example_node(cls), "max_iters": LOOP_MAX_ITERS}}]})
    return load_yaml({"pipeline": [*example_upstream(cls), example_node(cls),
                                   *getattr(cls, "downstream_example", [])]})


def well_formed(run, queries, corpus) -> None:  # noqa: ANN001
    """One ranking per query (in the queries' order), sorted best first, rows int64 in the corpus, scores
    float32 and finite, no document twice in one ranking."""
    assert len(run) == len(queries) and list(run.query_ids) == list(queries.ids)
    assert len(run.rankings) == len(run.doc_ids) == len(queries), "one ranking per query"
    for r in run.rankings:
        assert r.rows.dtype == np.int64 and r.scores.dtype == np.float32
        assert np.isfinite(r.scores).all(), f"scores must be finite: {r.scores}"
        assert np.all(np.diff(r.scores) <= 1e-6), "scores must be non-increasing"
        assert len(np.unique(r.rows)) == len(r.rows), "a document appears twice in one ranking"
        assert (r.rows >= 0).all() and (r.rows < len(corpus)).all()


def bench_module(name: str):
    """bench/<name>.py as a module, imported with the environment it sets (BLAS threads) undone; the bench's
    own modules (its ``_common``) leave ``sys.modules`` again (the examples import their own ``_common``)."""
    with scripts_of((REPO / "bench").resolve()), mock.patch.dict(os.environ):
        sys.path.insert(0, str(REPO / "bench"))
        return importlib.import_module(name)


def search_stdin(index: Path, data: bytes | str):  # noqa: ANN201
    """``ragkit search --index index --queries - --run -`` with ``data`` on standard input (typer's runner)."""
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, ["search", "--index", str(index), "--queries", "-", "--run", "-"], input=data,
                              env={"COLUMNS": "300"})


@pytest.fixture
def two_doc_index(tmp_path: Path) -> Path:
    """A saved BM25 (k=2) over two documents, d1 and d2, for ``ragkit search --index``."""
    from ragkit import Corpus
    from ragkit.retrievers import BM25

    BM25(k=2).fit(Corpus(ids=["d1", "d2"], texts=["vitamin d and cancer", "statins lower cholesterol"])).save(
        tmp_path / "ix")
    return tmp_path / "ix"


@pytest.fixture
def scratch():
    """The operator registry as it was before the test: the names a test registers are removed after it."""
    from ragkit import registry

    registry.load_all()
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def edit_json(path: Path, fn) -> None:
    """Edit the JSON file ``path`` in place: ``fn`` changes the parsed data."""
    import json

    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def reseal(folder: Path) -> None:
    """Recompute a save's checksums after an edit (a pipeline's manifest, or an operator's ``checksums.json``), as
    the save that wrote the edited files would have: what a crafted folder's author does."""
    import json

    from ragkit._files import folder_checksums
    from ragkit._saves import CHECKSUMS

    if (folder / "manifest.json").is_file():
        edit_json(folder / "manifest.json", lambda m: m.update(
            sha256={k: v for k, v in folder_checksums(folder).items() if k != "manifest.json"}))
    else:
        (folder / CHECKSUMS).unlink(missing_ok=True)
        (folder / CHECKSUMS).write_text(json.dumps(folder_checksums(folder)))


#: Set by :func:`hide_modules`: the test hid packages, so transformers' cached answers may be stale after it
_HID_PACKAGES: list[bool] = []


def hide_modules(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``modules`` look uninstalled for the test: ``import`` raises ImportError and ``find_spec`` answers
    ``None`` (their loaded submodules dropped, put back after it)."""
    for m in modules:
        for loaded in [k for k in sys.modules if k == m or k.startswith(m + ".")]:
            monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setitem(sys.modules, m, None)
    _HID_PACKAGES.append(True)


@pytest.fixture(autouse=True)
def _fresh_availability_after_hiding() -> Iterator[None]:
    """After a test that hid packages (:func:`hide_modules`; set up before its ``monkeypatch``, so torn down after
    the packages are back), transformers forgets what it cached of their availability (``is_accelerate_available``
    is an ``lru_cache``): asked while accelerate was hidden, it kept answering False, and a later fine-tune in the
    same process failed ('the Trainer requires accelerate')."""
    yield
    if _HID_PACKAGES:
        _HID_PACKAGES.clear()
        utils = sys.modules.get("transformers.utils.import_utils")
        for value in vars(utils).values() if utils is not None else ():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()


#: A four-document BEIR dataset for command-line tests (:func:`tiny_beir`): ``(id, title, text)`` ...
TINY_DOCS = [("d1", "Vitamin D", "Vitamin D prevents fractures in elderly people."),
             ("d2", "Cats", "Cats sleep most of the day."),
             ("d3", "Dogs", "Dogs bark at strangers."),
             ("d4", "Hips", "Fractures of the hip are common.")]
#: ... and its queries, ``(id, text)``: q1-q3 judged in test, q4-q6 in train
TINY_QUERIES = [("q1", "does vitamin D prevent fractures"), ("q2", "why do cats sleep"), ("q3", "dog barking"),
                ("q4", "hip fracture"), ("q5", "sleeping cats"), ("q6", "barking dogs")]


def tiny_beir(root: Path) -> Path:
    """A BEIR folder at ``root`` of :data:`TINY_DOCS` and :data:`TINY_QUERIES`, with a test and a train split."""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n"
                                               for i, t, x in TINY_DOCS), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in TINY_QUERIES),
                                        encoding="utf-8")
    head = "query-id\tcorpus-id\tscore\n"
    (root / "qrels" / "test.tsv").write_text(head + "q1\td1\t1\nq2\td2\t1\nq3\td3\t1\n", encoding="utf-8")
    (root / "qrels" / "train.tsv").write_text(head + "q4\td4\t1\nq5\td2\t1\nq6\td3\t1\n", encoding="utf-8")
    return root


def cli(*args: object):  # noqa: ANN201
    """``ragkit`` with ``args`` (as strings), in this process, 200 columns wide: typer's ``Result``."""
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def file_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder served as ``$RAGKIT_BEIR_URL`` (a ``file:`` URL: no network), the cache under ``tmp_path``
    and the current folder ``tmp_path``: the folder, to put zips in."""
    www = tmp_path / "www"
    www.mkdir()
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAGKIT_BEIR_URL", www.as_uri())
    monkeypatch.chdir(tmp_path)
    return www


class ClosedPipe(io.TextIOBase):
    """A standard stream whose reader closed the pipe: every write and flush fails with EPIPE."""

    encoding = "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")
