"""Review 51, second part: what a load says of saved parameters the operator's class refuses (a plugin's Params
changed since the save, a built-in's another ragkit version), the query ids a ``State`` takes, and the save's
arrays flushed to the disk before its folder is renamed into place."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import edit_json, reseal
from pydantic import Field

from ragkit import Operator, Params, Ranking
from ragkit.errors import ArtifactError
from ragkit.pipelines import Pipeline
from ragkit.registry import register
from ragkit.retrievers import BM25
from ragkit.types import Corpus


@pytest.fixture
def corpus() -> Corpus:
    return Corpus.from_texts(["green apples and pears", "red apples", "a long text about pears and plums"])


class _PriorParams(Params):
    weight: float = Field(default=0.1, ge=0.0, description="The prior's weight.")


@register
class _S51bPrior(Operator):
    """Rerank: add a length prior (a plugin's operator: its module is not ragkit's)."""

    name = "s51b_prior"
    kind = "reranker"
    Params = _PriorParams
    params: _PriorParams
    reads_rankings = True

    def _fit(self, corpus, train, upstream):
        self.prior_ = np.log2(1 + np.array([len(t.split()) for t in corpus.texts], np.float32))

    def _call(self, state):
        out = state.copy()
        out.rankings = [Ranking(r.rows, r.scores + np.float32(self.params.weight) * self.prior_[r.rows])
                        for r in state.rankings or []]
        return out

    def _save(self, folder):
        np.save(folder / "prior.npy", self.prior_)

    def _load(self, folder, mmap=False):
        self.prior_ = np.load(folder / "prior.npy")


# ---------------------------------------------------------------- 1. saved parameters the class refuses
def _saved_with_old_params(folder, op):
    """``op`` saved at ``folder`` as the version of its class that had a parameter ``old`` would have saved it."""
    op.save(folder)
    edit_json(folder / "params.json", lambda m: m["params"].update(old=3))
    reseal(folder)


def test_a_plugin_whose_params_changed_is_told_so_not_another_ragkit_version(corpus, tmp_path):
    """Old code: '... or written by another ragkit version: save the operator again' (false: ragkit is not what
    changed, and a save needs the operator loaded)."""
    _saved_with_old_params(tmp_path / "op", _S51bPrior(weight=0.2).fit(corpus))
    for load in (lambda: _S51bPrior.load(tmp_path / "op"), lambda: Operator.load(tmp_path / "op")):
        with pytest.raises(ArtifactError) as e:
            load()
        said = str(e.value)
        assert "ragkit version" not in said and "another ragkit" not in said
        assert said.startswith(f"{tmp_path / 'op' / 'params.json'}: s51b_prior.old: unknown parameter")
        assert (f"the parameters of _S51bPrior ({__name__}._S51bPrior) changed since the folder was saved" in said
                and "load it with the version of _S51bPrior that saved it, or fit the operator and save it again"
                in said)


def test_a_pipeline_step_of_a_plugin_whose_params_changed_says_so_and_to_save_the_pipeline(corpus, tmp_path):
    (BM25(k=3) | _S51bPrior(weight=0.2)).fit(corpus).save(tmp_path / "p")
    step = next(p for p in (tmp_path / "p" / "ops").iterdir() if p.name.endswith("s51b_prior"))
    edit_json(step / "params.json", lambda m: m["params"].update(old=3))
    reseal(tmp_path / "p")
    with pytest.raises(ArtifactError) as e:
        Pipeline.load(tmp_path / "p")
    said = str(e.value)
    assert "ragkit version" not in said and f"({__name__}._S51bPrior) changed since the folder was saved" in said
    assert "or fit the pipeline and save it again with this one" in said


def test_a_built_in_operator_refusing_its_saved_params_names_the_ragkit_that_saved_it(corpus, tmp_path):
    """The built-ins compare the ragkit versions, as a learned attribute missing does (one helper)."""
    from ragkit import __version__

    _saved_with_old_params(tmp_path / "ix", BM25(k=3).fit(corpus))
    with pytest.raises(ArtifactError, match=r"ix/params.json: bm25.old: unknown parameter.*; the saved parameters "
                                            rf"fail this ragkit's checks; saved by ragkit {re.escape(__version__)}, "
                                            r"this one's version number, and its files match the checksums its save "
                                            r"wrote: the code that reads them may have changed without a new version "
                                            r"number \(a development checkout\): fit the operator and save it again "
                                            r"with this one$"):
        Operator.load(tmp_path / "ix")
    edit_json(tmp_path / "ix" / "params.json", lambda m: m.update(ragkit_version="9.9.0"))
    reseal(tmp_path / "ix")
    with pytest.raises(ArtifactError, match=r"bm25.old: unknown parameter.*; the folder was saved by a newer ragkit "
                                            rf"\(ragkit 9\.9\.0, this is {__version__}\) whose BM25 takes other "
                                            r"parameters: upgrade ragkit \(or fit the operator and save it again "
                                            r"with this one\)$"):
        Operator.load(tmp_path / "ix")
    edit_json(tmp_path / "ix" / "params.json", lambda m: m.update(ragkit_version="0.0.1"))
    reseal(tmp_path / "ix")
    with pytest.raises(ArtifactError, match=r"saved by another ragkit \(ragkit 0\.0\.1, this is .*\), whose BM25 may "
                                            r"take other parameters: load it with that version"):
        Operator.load(tmp_path / "ix")


# ---------------------------------------------------------------- 2. State's query ids
@pytest.mark.parametrize("ids, expected", [
    ("xy", r"State.query_ids: expected a list of query ids \(one per query\), got a str \('xy'\); wrap it in a list"),
    ([None, None], r"State.query_ids\[0\] is None, not an id; a missing id names nothing"),
    (["q", "q"], r"State.query_ids: 'q' is repeated; expected one id per query, each once"),
    (["a", ""], r"State.query_ids\[1\] is '', an empty id"),
    (["a\tb", "c"], r"State.query_ids\[0\] is 'a\\tb', which holds a tab"),
    (["a"], r"State: 1 query ids for 2 queries; expected one id per query"),
    ({"a": 1, "b": 2}, r"State.query_ids: expected a list of query ids .*got a dict"),
    (5, r"State.query_ids: expected a list of query ids .*got an int"),
])
def test_state_query_ids_are_checked_as_queries_checks_its_ids(ids, expected):
    """Old code: 'xy' was two ids, [None, None] and ['q', 'q'] were kept, 5 a TypeError from len()."""
    from ragkit.errors import DataError
    from ragkit.types import State

    with pytest.raises(DataError, match=f"^{expected}"):
        State(["a", "b"], query_ids=ids)


def test_state_query_ids_as_an_array_or_numbers_are_strings():
    """Old code: an array was 'the truth value of an array ... is ambiguous' (ValueError); [1, 2] kept as ints
    (Queries writes ids as strings, as runs and qrels key them)."""
    from ragkit.types import Queries, State

    for ids in (np.array(["x", "y"]), ("x", "y"), iter(["x", "y"])):
        assert State(["a", "b"], query_ids=ids).query_ids == ["x", "y"]
    for ids in ([1, 2], np.array([1, 2]), np.array([1.0, 2.0])):
        got = State(["a", "b"], query_ids=ids).query_ids
        assert got == ["1", "2"] and all(type(q) is str for q in got)
    assert State(["a", "b"], query_ids=np.array([], dtype=str)).query_ids == ["q0", "q1"]
    assert State(["a", "b"], query_ids=None).query_ids == ["q0", "q1"]
    given = Queries(["x", "y"], ["a", "b"])
    assert State(given, query_ids=np.array(["x", "y"])).query_ids == ["x", "y"]
    state = State(["a", "b"], query_ids=["x", "y"])
    assert state.copy().query_ids == ["x", "y"] and state.subset([1]).query_ids == ["y"]


# ---------------------------------------------------------------- 3. a save's arrays on the disk before its rename
def test_a_save_flushes_its_arrays_and_folders_before_renaming_the_folder_into_place(corpus, tmp_path, monkeypatch):
    """Old code: only the JSON files (atomic_file) were flushed; np.save's .npy files could reach the disk after
    the rename that made the folder the save (a power loss: an empty or zero-filled array in a complete save)."""
    import os

    from ragkit import _saves

    seen: list[object] = []  # the inodes os.fsync was called on, and "swap" where the folder is renamed into place
    real_fsync, real_exchange, real_renames = os.fsync, _saves._exchange, _saves.atomic_dir._swap_by_renames

    def fsync(fd: int) -> None:
        seen.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    def exchange(*args):
        seen.append("swap")
        return real_exchange(*args)

    def renames(self):
        seen.append("swap")
        return real_renames(self)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(_saves, "_exchange", exchange)
    monkeypatch.setattr(_saves.atomic_dir, "_swap_by_renames", renames)
    for n, folder in enumerate((tmp_path / "op", tmp_path / "op", tmp_path / "pipe")):  # (new, replaced, pipeline)
        seen.clear()
        (BM25(k=3) | _S51bPrior()).fit(corpus).save(folder) if n == 2 else BM25(k=3).fit(corpus).save(folder)
        before = set(seen[:seen.index("swap")])
        arrays = list(folder.rglob("*.npy"))
        assert arrays and {os.stat(p).st_ino for p in arrays} <= before
        assert {os.stat(p).st_ino for p in [folder, *folder.rglob("*")]} <= before


def test_setattr_reaches_a_mixins_own_setattr(corpus):
    """Operator.__setattr__ (validating op.params) ended in object.__setattr__, skipping the __setattr__ of another
    base: an Operator + torch.nn.Module plugin's submodules assigned in _fit were no longer registered."""
    seen: list[str] = []

    class Recording:
        def __setattr__(self, key, value):  # noqa: ANN001, ANN204
            seen.append(key)
            object.__setattr__(self, key, value)

    class Mixed(BM25, Recording):
        pass

    op = Mixed(k=2)
    op.fit(corpus)
    assert "corpus_" in seen
    op.params = {"k": 3}
    assert "params" in seen and op.params.k == 3
