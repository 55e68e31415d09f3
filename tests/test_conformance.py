"""The operator contract, executable: every registered operator passes these checks.

Parametrised over the registry (ids ``<operator>-<check>``, so ``pytest -k dense-save_load``
works).  Each operator is exercised with its ``example`` parameters on a small SciFact
slice, after the upstream steps it needs: a retriever runs alone; a reranker, filter,
router, judge or generator runs after ``upstream_example`` (default BM25 top-20); a fuser
fuses two BM25 variants; a judge ends a loop of up to 3 rounds.  A router's, judge's or filter's example
must make the slice's queries decide differently (``decisions_vary``).  A known failure is declared on the
operator in ``xfail_checks = {check: reason}``.

The example parameters leave every learning mode off, so a second parametrisation runs the
operators in their learning modes (``LEARNING_MODES``, ids ``<operator>.<mode>-<check>``, so
``pytest -k score_router.learn`` works): each mode is embedded in the small pipeline it learns
in (a fuser in a parallel, a router in a route, a judge in a loop's ``until``) and fitted with
the slice's judged training queries.  A new learning parameter (a field named ``learn`` or
``adapt``, a ``"learn"`` option) fails ``test_every_learning_mode_is_exercised`` until a mode
for it is added there.

How to fix a failing check is in each check's docstring.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from conftest import example_pipeline, well_formed
from pydantic import BaseModel

from ragkit import registry
from ragkit.errors import ConfigError, DataError, NotFittedError, ParamError
from ragkit.operator import Operator
from ragkit.params import MAX_INT, has_upper_bound
from ragkit.pipelines import Pipeline
from ragkit.pipelines.yaml import load_yaml
from ragkit.types import State

#: the pipeline each operator is checked in, and what a run must look like: shared with test_degenerate
_pipeline = example_pipeline
_well_formed = well_formed


#: where :func:`_pipeline` puts an operator of each kind: the attribute of the last step that holds it
_SEAT = {"fuser": "fuse", "router": "router", "judge": "until"}


def _step_of(cls: type[Operator]) -> int:
    """The step of :func:`example_pipeline` that holds ``cls``: the last, but for its ``downstream_example``."""
    return -1 - len(getattr(cls, "downstream_example", []))


def _target(pipe: Pipeline, cls: type[Operator]) -> Operator:
    if cls.kind == "fuser":
        return pipe.steps[0].fuse
    return getattr(pipe.steps[_step_of(cls)], _SEAT[cls.kind]) if cls.kind in _SEAT else pipe.steps[_step_of(cls)]


def _replace_target(pipe: Pipeline, cls: type[Operator], op: Operator) -> None:
    """Put ``op`` where :func:`_target` finds the operator."""
    if cls.kind in _SEAT:
        setattr(pipe.steps[0 if cls.kind == "fuser" else _step_of(cls)], _SEAT[cls.kind], op)
    else:
        pipe.steps[_step_of(cls)] = op


#: how far two scores of one document may differ between two runs that are equal up to float rounding
RTOL, ATOL = 1e-5, 1e-6


def _same(a, b, exact: bool = True) -> None:
    """Two runs give identical rankings and per-query values: the same scores bit for bit when ``exact``
    (a refit, a save and load, an unfitted stateless operator), else within float32 rounding: a batch of one
    beside a batch of twelve, where an encoder's or a matrix product's kernel depends on the batch's shape
    (dense, dbnorm, dbnorm_dense, knn_embed and cosine_adapter scores differ by up to 1e-6 there).  Not exact,
    documents whose scores are tied within that rounding may swap places (:func:`_same_up_to_ties`)."""
    assert a.query_ids == b.query_ids
    assert len(a.rankings) == len(b.rankings) == len(a.query_ids)
    assert set(a.values) == set(b.values), (sorted(a.values), sorted(b.values))
    for qid, ra, rb in zip(a.query_ids, a.rankings, b.rankings):
        if exact:
            np.testing.assert_array_equal(ra.rows, rb.rows, err_msg=f"query {qid!r}: rows")
            np.testing.assert_array_equal(ra.scores, rb.scores, err_msg=f"query {qid!r}: scores")
        else:
            _same_up_to_ties(ra, rb, qid)
    for key in set(a.values) & set(b.values) - MEASURED:
        assert [str(x) for x in a.values[key]] == [str(x) for x in b.values[key]], key


def _same_up_to_ties(ra, rb, qid: str) -> None:
    """Two rankings of one query equal within float rounding (``RTOL``, ``ATOL``): scores position by position,
    and rows but for documents whose scores are tied within it, which may swap places (BLAS sums in another
    order for another batch shape), or swap in and out at the cut-off, tied with the last one kept."""
    assert len(ra) == len(rb), f"query {qid!r}: {len(ra)} results, then {len(rb)}"
    np.testing.assert_allclose(ra.scores, rb.scores, rtol=RTOL, atol=ATOL, err_msg=f"query {qid!r}: scores")
    if np.array_equal(ra.rows, rb.rows):
        return
    sa = dict(zip(ra.rows.tolist(), ra.scores.tolist()))
    sb = dict(zip(rb.rows.tolist(), rb.scores.tolist()))
    for one, other, last in ((sa, sb, float(rb.scores[-1])), (sb, sa, float(ra.scores[-1]))):
        for row, score in one.items():
            ref = other.get(row, last)  # (a row only one run kept must be tied with the other's last)
            assert abs(score - ref) <= ATOL + RTOL * abs(ref), (
                f"query {qid!r}: row {row} scores {score:.9g} in one run and "
                f"{'%.9g' % other[row] if row in other else 'is not kept'} in the other (its last kept scores "
                f"{last:.9g}): the rows differ beyond a swap of near-tied scores (within rtol={RTOL}, atol={ATOL})")


#: per-query values that record what a call cost, not what it answered (a prefill's seconds and the chunks it
#: found cached differ from one call to the next)
MEASURED = {"prefill"}


def _rows(run, idx: list[int]):
    """The queries ``idx`` of a run, as a run."""
    return type(run)([run.query_ids[i] for i in idx], [run.doc_ids[i] for i in idx], [run.scores[i] for i in idx],
                     rankings=[run.rankings[i] for i in idx],
                     values={k: [v[i] for i in idx] for k, v in run.values.items()})


# ---------------------------------------------------------------------- checks
def check_params_roundtrip(cls, data, tmp_path):
    """The example params validate, and ``cls(op.params.model_dump())`` is equal.

    Fix: every parameter must be a pydantic field of ``cls.Params`` with a JSON-able value.
    """
    op = cls(**cls.example)
    assert op == cls(op.params.model_dump(mode="json"))
    assert isinstance(op.params, BaseModel)


def check_params_typed(cls, data, tmp_path):
    """``cls.params`` is annotated with ``cls.Params``, so that users' type checkers know
    ``op.params.k`` (``tests/test_typing.py`` runs mypy; this names the class that lacks it).

    Fix: write ``params: XParams`` in the class body, beside ``Params = XParams``.
    """
    owner = next(c for c in cls.__mro__ if "params" in vars(c).get("__annotations__", {}))
    hint = vars(owner)["__annotations__"]["params"]  # (only this one: others may name TYPE_CHECKING imports)
    if isinstance(hint, str):
        hint = eval(hint, vars(sys.modules[owner.__module__]))
    assert hint is cls.Params, f"{cls.__name__}.params is annotated {hint} (in {owner.__name__})"


def check_yaml_roundtrip(cls, data, tmp_path):
    """``from_yaml(to_yaml())`` rebuilds an equal operator.

    Fix: ``to_dict`` must emit only non-default params that the Params model accepts back.
    """
    op = cls(**cls.example)
    again = Pipeline.from_yaml(op.to_yaml()).steps[0]
    assert again == op and type(again) is cls


def check_bad_params(cls, data, tmp_path):
    """An unknown parameter, an out-of-range value and a value of the wrong type (a mapping where a number
    goes, a number where a string, a flag or a list goes) raise ParamError naming the field.

    Fix: use ``Field(ge=..)``/``Literal`` constraints and precise annotations; never validate with ``assert``.
    """
    with pytest.raises(ParamError, match=rf"{cls.name}\.no_such_param"):
        cls(no_such_param=1)
    for fname, field in cls.Params.model_fields.items():
        ann = field.annotation
        inner = [a for a in typing.get_args(ann) if a is not type(None)] if typing.get_origin(ann) in (
            typing.Union, types.UnionType) else [ann]
        bad = []
        for m in field.metadata:  # every bound, on ints and floats, optional or not
            for attr, step in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
                bound = getattr(m, attr, None)
                if bound is not None and any(t in (int, float) for t in inner):
                    bad.append(bound + step * (1 if int in inner and float not in inner else 0.5) if step else bound)
        if int in inner and not has_upper_bound(field):  # no bound of its own: MAX_INT bounds it
            bad.append(MAX_INT + 1)
        if typing.get_origin(ann) is typing.Literal:
            bad.append("__not_an_option__")
        bad += _wrong_types(ann)
        for value in bad:
            with pytest.raises(ParamError, match=rf"{cls.name}(\.{fname}\b|: {fname}=)"):
                cls(**{**cls.example, fname: value})


#: a value of each kind, given where a field takes no value of that kind (:func:`_kinds`)
_WRONG = {"mapping": {"__wrong__": 1}, "number": 12345, "string": "__wrong__", "list": ["__wrong__"]}


def _kinds(ann: Any) -> set[str]:
    """The kinds of value (``_WRONG``'s keys, and ``flag``) a field annotated ``ann`` takes; all of them
    for ``Any`` or a type not known here."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _kinds(typing.get_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_kinds(a) for a in typing.get_args(ann) if a is not type(None)))
    if origin is typing.Literal:
        return {"string" if isinstance(v, str) else "flag" if isinstance(v, bool) else "number"
                for v in typing.get_args(ann)}
    base = origin or ann
    if base is bool:
        return {"flag"}
    if base in (int, float):
        return {"number"}
    if base in (str, Path):
        return {"string"}
    if base in (list, tuple, set, frozenset) or (inspect.isclass(base) and issubclass(base, typing.Sequence)
                                                 and base is not str):
        return {"list"}
    if base is dict or (inspect.isclass(base) and issubclass(base, (BaseModel, typing.Mapping))):
        return {"mapping"}
    return set(_WRONG) | {"flag"}


def _wrong_types(ann: Any) -> list:
    """Values a field annotated ``ann`` must refuse for their type: a mapping where a number goes, a number
    where a string, a flag or a list goes, and so on (none for a field that takes anything)."""
    kinds = _kinds(ann)
    return [value for kind, value in _WRONG.items() if kind not in kinds]


def check_no_learned_attrs_before_fit(cls, data, tmp_path):
    """The constructor stores params only: no attribute ending in ``_`` before ``fit``.

    Fix: move index building and model loading into ``_fit``.
    """
    op = cls(**cls.example)
    assert not [k for k in vars(op) if k.endswith("_") and not k.startswith("_")]


def check_unfitted_raises(cls, data, tmp_path):
    """Calling an unfitted operator that needs fitting raises NotFittedError; a stateless operator, unfitted,
    answers exactly as the fitted one in its place.

    Fix: keep learned state in ``attr_`` names (the base class checks them); an operator that learns
    nothing at fit says ``stateless = True`` and reads nothing that fit sets.
    """
    corpus, queries, _, train = data
    if not cls.stateless:
        with pytest.raises(NotFittedError):
            cls(**cls.example)(State.of(queries.texts[:2]))
        return
    pipe = _pipeline(cls).fit(corpus, train)
    fitted = pipe.search(queries)
    _replace_target(pipe, cls, cls(**cls.example))
    _same(fitted, pipe.search(queries))


def check_fit_returns_self(cls, data, tmp_path):
    """``fit`` returns ``self``.  Fix: ``return self`` (the base class does)."""
    corpus, _, _, train = data
    pipe = _pipeline(cls)
    assert pipe.fit(corpus, train) is pipe
    op = _target(pipe, cls)
    if not op.wants_upstream:
        assert op.fit(corpus, train) is op
    elif cls.kind != "fuser":  # it learns from the steps before it on the training queries
        upstream = State.of(train.queries)
        for step in pipe.steps[:-1]:
            upstream = step(upstream)
        assert op.fit(corpus, train, upstream=upstream) is op


def check_call_batch(cls, data, tmp_path):
    """A batch returns one ranking per query, sorted best first, rows int64, scores float32, no duplicates.

    Fix: use ``topk_rows`` / ``Ranking``; keep ``state.rankings`` aligned with ``state.queries``.
    """
    corpus, queries, _, train = data
    _well_formed(_pipeline(cls).fit(corpus, train).search(queries), queries, corpus)


def check_batch_invariance(cls, data, tmp_path):
    """A batch of 1 equals the matching row of a batch of N, and shuffling only permutes the output.

    Scores may differ by float rounding (a BLAS matrix product or an encoder picks its kernel, and so its order
    of summation, by the batch's shape), by up to rtol 1e-5 / atol 1e-6, and documents whose scores are tied
    within that may swap places: both are allowed.  Fix: no state shared across queries of a batch (per-row
    computations only: a mean, a norm or a threshold over the batch makes one query's answer depend on the others).
    """
    corpus, queries, _, train = data
    pipe = _pipeline(cls).fit(corpus, train)
    full = pipe.search(queries)
    _same(pipe.search(queries[[3]]), _rows(full, [3]), exact=False)
    perm = [int(i) for i in np.random.default_rng(0).permutation(len(queries))]
    _same(pipe.search(queries[perm]), _rows(full, perm), exact=False)


def check_empty_batch(cls, data, tmp_path):
    """An empty batch returns an empty, well-formed run: no query ids, no rankings, no per-query values.

    Fix: handle ``n_q == 0`` without special-casing errors (``[]`` rankings, every value an empty list).
    """
    corpus, queries, _, train = data
    pipe = _pipeline(cls).fit(corpus, train)
    run = pipe.search(queries[:0])
    assert len(run) == 0 and run.query_ids == [] and run.rankings == [] and run.doc_ids == [] and run.scores == []
    _well_formed(run, queries[:0], corpus)
    assert all(len(v) == 0 for v in run.values.values()), {k: v for k, v in run.values.items() if len(v)}


#: the kinds of operator that decide something per query (checked by :func:`check_decisions_vary`)
DECIDING = ("router", "judge", "filter")
#: operators whose decision is the same for every query by definition, so that no example can make it vary
DECIDE_ALIKE = {
    "max_only": "never done: every query runs the loop's max_iters rounds",
    "top_k": "cuts every ranking to k: each query of the slice keeps k of its 20 results",
}


def _decisions(cls: type[Operator], run) -> tuple[str, list]:
    """What a router, judge or filter decided for each query of ``run``: its route, its number of loop
    rounds, or how many of the upstream's results it kept."""
    if cls.kind == "router":
        return "route", list(run.values["route"])
    if cls.kind == "judge":
        return "number of loop rounds", list(run.values["iterations"])
    return "number of results kept", [len(r) for r in run.rankings]


def check_decisions_vary(cls, data, tmp_path):
    """A router, judge or filter decides per query: on the slice, its example parameters give different
    queries different decisions (two routes or more; two numbers of loop rounds or more; a filter drops some
    results but not all, and keeps more for some queries than for others), and each query alone gets the
    decision it gets in the batch.

    An example under which every query decides alike cannot tell a per-query decision from one made for the
    whole batch (on the batch's mean score, say), which the batch checks then miss.  Fix: pick ``example``
    parameters (and, if need be, ``upstream_example``) under which the slice's queries decide differently;
    an operator that decides alike by definition declares ``xfail_checks = {"decisions_vary": reason}`` (the
    built-in ones are in ``DECIDE_ALIKE``).
    """
    corpus, queries, _, train = data
    pipe = _pipeline(cls).fit(corpus, train)
    what, got = _decisions(cls, pipe.search(queries))
    for i in range(len(queries)):
        alone = _decisions(cls, pipe.search(queries[[i]]))[1]
        assert alone == [got[i]], (f"query {i} alone gets {what} {alone[0]!r}, in a batch of {len(queries)} "
                                   f"{got[i]!r}: the decision must depend on the query only")
    params = ", ".join(f"{k}={v!r}" for k, v in cls.example.items()) or "its default parameters"
    hint = (f"set {cls.__name__}.example to parameters (and, if need be, upstream_example to the steps before it) "
            f"under which the slice's queries decide differently, so that a decision made for the whole batch "
            f"rather than per query is caught; if {cls.__name__} decides alike for every query by design, declare it "
            f"on the class, xfail_checks = {{\"decisions_vary\": \"<why>\"}}, which marks this check as an "
            f"expected failure")
    assert cls.name in DECIDE_ALIKE or len(set(map(str, got))) >= 2, \
        f"with {params}, every query of the conformance slice gets the same {what} ({got[0]!r}): {hint}"
    if cls.kind == "filter":
        upstream = State.of(queries)
        for step in pipe.steps[:-1]:  # the fitted steps before it
            upstream = step(upstream)
        before = sum(len(r) for r in upstream.rankings)
        keeps = ("every one: a step that only rescores and keeps every candidate is a reranker (kind = "
                 "\"reranker\"), not a filter; else " if sum(got) == before else "")
        assert 0 < sum(got) < before, (f"with {params}, the filter keeps {sum(got)} of the slice's {before} results"
                                       f" ({keeps}a filter drops some results but not all): {hint}")


def check_fit_idempotent(cls, data, tmp_path):
    """Fitting twice on the same data gives the same output.  Fix: seed everything; reset state in ``_fit``."""
    corpus, queries, _, train = data
    pipe = _pipeline(cls).fit(corpus, train)
    a = pipe.search(queries)
    pipe2 = _pipeline(cls).fit(corpus, train)
    pipe2.fit(corpus, train)
    _same(a, pipe2.search(queries))


def check_save_load(cls, data, tmp_path):
    """Saved and loaded (operator folder and pipeline folder) gives identical rankings; no pickle files.

    Fix: write every learned array in ``_save`` and read it back in ``_load``.
    """
    corpus, queries, _, train = data
    pipe = _pipeline(cls).fit(corpus, train)
    before = pipe.search(queries)
    pipe.save(tmp_path / "pipe")
    reloaded = Pipeline.load(tmp_path / "pipe")
    op = _target(pipe, cls)
    plain = sorted(k for k in set(vars(op)) - set(vars(_target(reloaded, cls)))
                   if not k.endswith("_") and not k.startswith("_"))
    assert not plain, (f"{cls.__name__}'s fit set {', '.join(plain)}, which a load does not restore: attributes that "
                       f"do not end in '_' are not learned state to ragkit (neither recorded nor checked at load); "
                       f"rename {'it' if len(plain) == 1 else 'them'} {', '.join(k + '_' for k in plain)}, and write "
                       f"{'it' if len(plain) == 1 else 'them'} in _save and read {'it' if len(plain) == 1 else 'them'} "
                       f"back in _load")
    _same(before, reloaded.search(queries))
    op.save(tmp_path / "op")
    loaded = Operator.load(tmp_path / "op")
    assert type(loaded) is cls and loaded.params == op.params
    # the operator folder alone answers as the fitted operator did, in place of it
    _replace_target(pipe, cls, loaded)
    _same(before, pipe.search(queries))
    for p in (tmp_path / "pipe").rglob("*"):
        assert p.suffix not in (".pkl", ".pickle", ".joblib"), p


def check_input_unchanged(cls, data, tmp_path):
    """``_call`` leaves the state it is given as it was: the rankings of the steps before it (rows and scores) are
    not changed in place; a branch or a trace may still read them.

    Fix: build new arrays (``Ranking(rows[order], scores[order])``) in a ``state.copy()``; never ``r.scores *= w``.
    """
    corpus, queries, _, train = data
    pipe = _pipeline(cls).fit(corpus, train)
    op = _target(pipe, cls)
    original, seen = op._call, []

    def states(args: tuple) -> list[State]:
        return [a for a in args if isinstance(a, State)] + [
            b for a in args if isinstance(a, (list, tuple)) for b in a if isinstance(b, State)]

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003
        given = states(args)
        before = [[(r.rows.copy(), r.scores.copy()) for r in (st.rankings or [])] for st in given]
        out = original(*args, **kwargs)
        seen.append((before, [[(r.rows, r.scores) for r in (st.rankings or [])] for st in given]))
        return out

    op._call = spy  # type: ignore[method-assign]
    try:
        pipe.search(queries)
    finally:
        del op._call
    assert seen, f"{cls.__name__}._call was not called"
    for before, after in seen:
        for b_state, a_state in zip(before, after):
            assert len(b_state) == len(a_state)
            for (rows, scores), (rows2, scores2) in zip(b_state, a_state):
                np.testing.assert_array_equal(rows, rows2)
                np.testing.assert_array_equal(scores, scores2)


CHECKS = [
    check_params_roundtrip, check_params_typed, check_yaml_roundtrip, check_bad_params,
    check_no_learned_attrs_before_fit, check_unfitted_raises, check_fit_returns_self, check_call_batch,
    check_batch_invariance, check_empty_batch, check_fit_idempotent, check_save_load, check_decisions_vary,
    check_input_unchanged,
]


def _cases():
    for name in registry.names():
        cls = registry.get(name)
        for check in CHECKS:
            short = check.__name__.removeprefix("check_")
            if check is check_decisions_vary and cls.kind not in DECIDING:
                continue
            marks = []
            reason = cls.xfail_checks.get(short)
            if reason:
                marks.append(pytest.mark.xfail(reason=reason, strict=True))
            if getattr(cls, "slow_conformance", False) and short not in (
                    "params_roundtrip", "params_typed", "yaml_roundtrip", "bad_params", "no_learned_attrs_before_fit"):
                marks.append(pytest.mark.slow)
            yield pytest.param(cls, check, id=f"{name}-{short}", marks=marks)


def _with_fix(check: Callable[..., None], *args: Any) -> None:
    """``check(*args)``, an assertion that fails it followed by how to fix it: the ``Fix:`` part of the check's
    docstring (what it checks, when there is none), so that the pytest report says it."""
    try:
        check(*args)
    except AssertionError as e:
        doc = inspect.cleandoc(check.__doc__ or "")
        fix = doc[doc.index("Fix:"):] if "Fix:" in doc else doc
        raise AssertionError(f"{e}\n\n{check.__name__.removeprefix('check_').removeprefix('lcheck_')}: "
                             f"{' '.join(fix.split())}") from e


@pytest.mark.parametrize("cls, check", list(_cases()))
def test_conformance(cls, check, slice_data, tmp_path):
    _with_fix(check, cls, slice_data, tmp_path)


def test_registry_is_populated():
    """The core operators are registered (a broken family import would empty the registry)."""
    assert {"bm25", "dense", "rrf", "weighted", "top_k"} <= set(registry.names())


# ---------------------------------------------------------------------- learning modes
# Where a mode's operator learns: each function turns the operator's YAML node into the
# smallest pipeline that trains it, and the matching ``where`` path finds it in that pipeline.
STRONG_BM25 = {"bm25": {"k": 20}}
WEAK_BM25 = {"bm25": {"k": 20, "fields": "text", "k1": 0.0, "b": 0.0, "stemmer": "none", "stopwords": "none"}}


def _in_parallel(node: dict) -> dict:
    """A fuser over a strong and a weak BM25 (binary tf, text only, unstemmed): learning weighs them unequally."""
    return {"pipeline": [{"parallel": {"branches": [STRONG_BM25, WEAK_BM25], "fuse": node}}]}


def _in_route(node: dict) -> dict:
    """A router after BM25, choosing between a cut to 3 results and a re-retrieval with okapi BM25."""
    return {"pipeline": [STRONG_BM25, {"route": {"router": node, "branches": {
        "easy": [{"top_k": {"k": 3}}], "hard": [{"bm25": {"k": 20, "variant": "okapi", "k1": 1.5, "b": 0.75}}]}}}]}


def _in_loop(node: dict) -> dict:
    """A judge stopping a pseudo-relevance-feedback loop (up to 3 rounds of RM3 + BM25)."""
    return {"pipeline": [{"loop": {"body": [{"prf": {"fb_docs": 5, "fb_terms": 10}}, STRONG_BM25], "until": node,
                                   "max_iters": 3}}]}


def _after(*upstream: dict) -> Callable[[dict], dict]:
    return lambda node: {"pipeline": [*upstream, node]}


ADAPT = {"batch_size": 8, "max_steps": 2, "seed": 1}  # test_adapt's settings: one cached fine-tune serves both


def _learned_weights(op: Operator) -> dict:
    folds = type(op.params).model_fields["folds"].default  # folds without learn would do nothing: refused
    return {"learn": False, "folds": folds, "weights": [float(w) for w in op.weights_], **op.option_}


def _learned_threshold(op: Operator) -> dict:
    t = float(op.threshold_)  # "never" is +inf, which params refuse; any finite bound above every score acts alike
    return {"learn": False, "threshold": t if np.isfinite(t) else float(np.finfo(np.float64).max)}


def _tuned_model(op: Operator) -> dict:
    return {"adapt": None, "model": op.model_path_}


@dataclass(frozen=True)
class LearningMode:
    """One learning mode of a registered operator, and how the shared learning checks exercise it.

    Attributes
    ----------
    op : registry name; ``mode`` names the mode in test ids (``<op>.<mode>-<check>``).
    params : the operator's parameters in this mode.
    pipeline, where : the pipeline YAML holding the operator (from its node), and the attribute
        path from that pipeline to the operator.
    learned : attributes a fit with judged queries sets.
    frozen : the learned state written as ordinary parameters with learning off (fitted without
        judged queries, that pipeline must answer exactly as the learned one); ``None`` when the
        state has no parameter form.
    off : parameters switching learning off (the unlearned pipeline, whose answers must differ);
        ``None`` when the mode has no unlearned form.
    without_train : ``None`` when a fit without judged queries forgets what was learned (it then
        answers as the unlearned pipeline); else ``(error class, message pattern)`` of its refusal.
    bad : ``(parameter changes, message pattern)`` pairs refused at validation.
    slow : fine-tunes a model: every check that fits is marked slow.
    """

    op: str
    mode: str
    params: dict
    pipeline: Callable[[dict], dict]
    where: tuple
    learned: tuple[str, ...]
    frozen: Callable[[Operator], dict] | None
    off: dict | None
    without_train: tuple[type[Exception], str] | None
    bad: tuple[tuple[dict, str], ...] = ()
    slow: bool = False

    @property
    def id(self) -> str:
        return f"{self.op}.{self.mode}"


FUSER = {"pipeline": _in_parallel, "where": ("steps", 0, "fuse"), "learned": ("weights_", "learned_", "option_"),
         "frozen": _learned_weights}
THRESHOLD = {"learned": ("threshold_", "learned_"), "frozen": _learned_threshold, "off": None}


def _adapt_mode(op: str, pipeline: Callable[[dict], dict], where: tuple, **params: Any) -> LearningMode:
    return LearningMode(
        op, "adapt", {**params, "adapt": ADAPT}, pipeline, where, ("model_path_",), _tuned_model, {"adapt": None},
        (DataError, rf"{op}\.adapt fine-tunes the encoder on judged queries"),
        (({"adapt": {**ADAPT, "max_steps": 0}}, rf"{op}\.adapt\.max_steps"),
         ({"adapt": {**ADAPT, "batch_size": 1}}, rf"{op}\.adapt\.batch_size"),
         ({"adapt": {**ADAPT, "lr": 0.1}}, rf"{op}\.adapt\.lr")), slow=True)


LEARNING_MODES = [
    LearningMode("rrf", "learn", {"learn": True, "folds": 3}, **FUSER, off={"learn": False, "folds": 5},
                 without_train=None,
                 bad=(({"folds": 1}, r"rrf\.folds"),)),
    LearningMode("weighted", "learn", {"learn": True, "folds": 3}, **FUSER, off={"learn": False, "folds": 5},
                 without_train=None,
                 bad=(({"folds": 1}, r"weighted\.folds"),)),
    LearningMode("weighted", "norm_learn", {"learn": True, "norm": "learn", "folds": 3}, **FUSER,
                 off={"learn": False, "norm": "minmax", "folds": 5}, without_train=(ParamError, r"weighted\.norm"),
                 bad=(({"learn": False, "folds": 5}, r"weighted\b.*norm='learn'.*needs learn=true"),
                      ({"folds": 0}, r"weighted\.folds"))),
    LearningMode("score_router", "learn", {"feature": "top1", "learn": True}, _in_route, ("steps", 1, "router"),
                 **THRESHOLD, without_train=(ParamError, r"score_router\.learn: the threshold is learned"),
                 bad=(({"cost": -0.1}, r"score_router\.cost"),
                      ({"learn": False}, r"score_router\b.*threshold is required unless learn=true"),
                      ({"threshold": 0.5}, r"score_router\b.*threshold=0.5 and learn=true: a learned"),
                      ({"learn": False, "threshold": 0.5, "cost": 0.1}, r"score_router\b.*cost=0.1 applies only"))),
    LearningMode("score_reached", "learn", {"learn": True}, _in_loop, ("steps", 0, "until"),
                 **THRESHOLD, without_train=(ParamError, r"score_reached\.learn: the threshold is learned"),
                 bad=(({"cost": -0.1}, r"score_reached\.cost"),
                      ({"learn": False}, r"score_reached\b.*threshold is required unless learn=true"),
                      ({"threshold": 0.5}, r"score_reached\b.*threshold=0.5 and learn=true: a learned"),
                      ({"learn": False, "threshold": 0.5, "cost": 0.1}, r"score_reached\b.*cost=0.1 applies only"))),
    # learns by default (no switch): no frozen or unlearned form
    LearningMode("cosine_adapter", "default", {"max_iter": 50}, _after({"dense": {"k": 20}}), ("steps", 1),
                 ("weights_", "threshold_", "feat_mean_", "feat_std_"), None, None,
                 (DataError, r"cosine_adapter\.fit needs judged training queries"),
                 (({"val_fraction": 1.0}, r"cosine_adapter\.val_fraction"),
                  ({"target_value": 0}, r"cosine_adapter\.target_value"))),
    _adapt_mode("dense", _after(), ("steps", 0), k=10),
    _adapt_mode("muvera", _after(), ("steps", 0), k=10, candidates=20),
    _adapt_mode("maxsim_exact", _after(), ("steps", 0), k=10),
    _adapt_mode("maxsim", _after(STRONG_BM25), ("steps", 1), k=10),
]


def _at(pipe: Operator, where: tuple) -> Operator:
    node: Any = pipe
    for part in where:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return node


def _put(pipe: Operator, where: tuple, op: Operator) -> None:
    parent = _at(pipe, where[:-1])
    if isinstance(where[-1], int):
        parent[where[-1]] = op
    else:
        setattr(parent, where[-1], op)


def _mode_pipeline(mode: LearningMode, params: dict | None = None) -> Pipeline:
    return load_yaml(mode.pipeline({mode.op: params if params is not None else dict(mode.params)}))


def _differ(a, b) -> bool:
    return any(len(ra) != len(rb) or not np.array_equal(ra.rows, rb.rows) or not np.allclose(ra.scores, rb.scores)
               for ra, rb in zip(a.rankings, b.rankings))


def _same_state(a: Any, b: Any, name: str) -> None:
    """Learned attribute values are equal; a model folder (named by its content key) may have moved."""
    if isinstance(a, str) and isinstance(b, str) and name == "model_path_":
        assert Path(a).name == Path(b).name, name
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    else:
        assert a == b, name


def lcheck_yaml_roundtrip(mode, data, tmp_path, fitted):
    """The pipeline holding the mode writes and reads back the same YAML, and fitting does not rewrite it.

    Fix: learned state lives in ``attr_`` attributes, never in ``params``; ``to_dict`` keeps the switch.
    """
    pipe = _mode_pipeline(mode)
    text = pipe.to_yaml()
    again = Pipeline.from_yaml(text)
    assert again.to_yaml() == text
    assert _at(again, mode.where) == registry.get(mode.op)(**mode.params)
    if not mode.slow:
        assert fitted(mode)[0].to_yaml() == text, "fit(corpus, train) rewrote the parameters"


def lcheck_learns(mode, data, tmp_path, fitted):
    """A fit with judged queries learns: the state is set, used, and changes the answers.

    The pipeline with the learned state written as plain parameters (learning off) answers
    exactly as the learned one; the unlearned pipeline answers differently.  Fix: set every
    learned attribute in the learning fit, and read it (not the parameter) when called.
    """
    corpus, _, _, train = data
    pipe, _ = fitted(mode)
    op = _at(pipe, mode.where)
    missing = [a for a in mode.learned if getattr(op, a, None) is None]
    assert not missing, f"fit(corpus, train) set no {missing}: learning was skipped"
    learned = pipe.search(train.queries)
    if mode.frozen is not None:
        frozen = _mode_pipeline(mode, {**mode.params, **mode.frozen(op)}).fit(corpus)
        _same(learned, frozen.search(train.queries))
    if mode.off is not None:
        plain = _mode_pipeline(mode, {**mode.params, **mode.off}).fit(corpus)
        assert _differ(learned, plain.search(train.queries)), "the learned pipeline answers as the unlearned one"


def lcheck_call_batch(mode, data, tmp_path, fitted):
    """The learned pipeline's answers are well formed; a batch of 1 equals its row of a batch; empty works.

    Fix: as ``call_batch`` and ``batch_invariance``; a learned threshold or weight is per operator, never per batch.
    """
    corpus, queries, _, _ = data
    pipe, run = fitted(mode)
    _well_formed(run, queries, corpus)
    _same(pipe.search(queries[[3]]), _rows(run, [3]), exact=False)
    assert len(pipe.search(queries[:0])) == 0


def lcheck_save_load(mode, data, tmp_path, fitted):
    """Saved and loaded (pipeline folder and operator folder), the learned pipeline answers identically, unrefitted.

    Fix: write every learned attribute in ``_save`` and read it back in ``_load``.
    """
    _, queries, _, _ = data
    pipe, before = fitted(mode)
    op = _at(pipe, mode.where)
    pipe.save(tmp_path / "pipe")
    op.save(tmp_path / "op")

    def refit(*a, **k):
        raise AssertionError("loading fitted")

    with pytest.MonkeyPatch.context() as m:  # loading never fits (nor fine-tunes) again
        m.setattr(Operator, "fit", refit)
        m.setattr("ragkit.encoders.adapt.fine_tune", refit)
        loaded = Pipeline.load(tmp_path / "pipe")
        alone = Operator.load(tmp_path / "op")
        for got in (_at(loaded, mode.where), alone):
            assert type(got) is type(op) and got.params == op.params
            for a in mode.learned:
                _same_state(getattr(op, a), getattr(got, a, None), a)
        _same(before, loaded.search(queries))
        _put(loaded, mode.where, alone)  # the operator folder alone answers as the fitted operator did
        _same(before, loaded.search(queries))
    for p in (tmp_path / "pipe").rglob("*"):
        assert p.suffix not in (".pkl", ".pickle", ".joblib"), p


def lcheck_refit_without_train(mode, data, tmp_path, fitted):
    """A refit without judged queries forgets what was learned, or refuses with the documented error and
    changes nothing; a refit with them learns the same again.

    Fix: drop learned attributes at the start of a fit that forgets; check ``train`` before
    touching any state in a fit that refuses (``needs_train``).
    """
    corpus, queries, _, train = data
    pipe = _mode_pipeline(mode).fit(corpus, train)
    learned = pipe.search(queries)
    op = _at(pipe, mode.where)
    if mode.without_train is None:
        assert not op.needs_train
        pipe.fit(corpus)
        kept = [a for a in mode.learned if hasattr(op, a)]
        assert not kept, f"a fit without judged queries kept {kept} from the earlier fit"
        _same(pipe.search(queries), _mode_pipeline(mode, {**mode.params, **mode.off}).fit(corpus).search(queries))
    else:
        assert op.needs_train, "an operator whose fit refuses to run without judged queries says so in needs_train"
        error, pattern = mode.without_train
        with pytest.raises(error, match=pattern):
            pipe.fit(corpus)
        _same(learned, pipe.search(queries))
    pipe.fit(corpus, train)
    _same(learned, pipe.search(queries))


def lcheck_bad_params(mode, data, tmp_path, fitted):
    """Bad learning parameters fail at validation (constructor and YAML) with a message naming the field.

    Fix: constrain the field (``Field(ge=..)``) or check it in a model validator whose message names it.
    """
    cls = registry.get(mode.op)
    bad = list(mode.bad)
    if "learn" in cls.Params.model_fields:
        bad.append(({"learn": "sometimes"}, rf"{cls.name}\.learn: expected true or false"))
    for change, pattern in bad:
        params = {**mode.params, **change}
        with pytest.raises(ParamError, match=pattern):
            cls(**params)
        with pytest.raises(ConfigError, match=pattern):
            load_yaml(mode.pipeline({cls.name: params}))


LEARNING_CHECKS = [lcheck_yaml_roundtrip, lcheck_learns, lcheck_call_batch, lcheck_save_load,
                   lcheck_refit_without_train, lcheck_bad_params]


def _learning_cases():
    for mode in LEARNING_MODES:
        for check in LEARNING_CHECKS:
            short = check.__name__.removeprefix("lcheck_")
            marks = [pytest.mark.slow] if mode.slow and short not in ("yaml_roundtrip", "bad_params") else []
            yield pytest.param(mode, check, id=f"{mode.id}-{short}", marks=marks)


@pytest.fixture(scope="module")
def learned_fits(slice_data):
    """Each mode's pipeline fitted once with the slice's judged training queries, and its run on the test queries."""
    corpus, queries, _, train = slice_data
    cache: dict[str, tuple[Pipeline, Any]] = {}

    def fitted(mode: LearningMode) -> tuple[Pipeline, Any]:
        if mode.id not in cache:
            pipe = _mode_pipeline(mode).fit(corpus, train)
            cache[mode.id] = (pipe, pipe.search(queries))
        return cache[mode.id]

    return fitted


@pytest.mark.parametrize("mode, check", list(_learning_cases()))
def test_learning_mode(mode, check, slice_data, tmp_path, learned_fits):
    _with_fix(check, mode, slice_data, tmp_path, learned_fits)


def _learning_switches(cls: type[Operator]) -> dict[str, Any]:
    """The parameters that turn a learning mode on: ``learn``/``adapt`` fields and ``"learn"`` options."""
    out: dict[str, Any] = {}
    for name, f in cls.Params.model_fields.items():
        if name == "learn":
            out[name] = True
        elif name == "adapt":
            out[name] = "any"
        elif "learn" in typing.get_args(f.annotation):
            out[name] = "learn"
    return out


def _builtin(cls: type) -> bool:
    """Whether ``cls`` is one of ragkit's own operators (its module under the ``ragkit`` package)."""
    return cls.__module__ == "ragkit" or cls.__module__.startswith("ragkit.")


def test_every_learning_mode_is_exercised():
    """Every learning switch of a built-in operator (and every one that always learns from judged queries)
    has an entry in LEARNING_MODES.  Fix: add one, with the pipeline the operator learns in.  An operator of
    a plugin (its module outside ragkit) is not asked: its modes are its own tests' (LEARNING_MODES is ragkit's)."""
    missing = []
    for name in registry.names():
        cls = registry.get(name)
        if not _builtin(cls):
            continue
        modes = [m for m in LEARNING_MODES if m.op == name]
        for switch, on in _learning_switches(cls).items():
            if not any(switch in m.params and (on == "any" or m.params[switch] == on) for m in modes):
                missing.append(f"{name}.{switch}")
        if inspect.getattr_static(cls, "wants_upstream") is True and not modes:  # learns whatever its params
            missing.append(name)
    assert not missing, f"learning modes without an entry in LEARNING_MODES: {missing}"
    assert len({m.id for m in LEARNING_MODES}) == len(LEARNING_MODES)
