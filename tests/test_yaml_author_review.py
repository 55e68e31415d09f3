"""Pipeline YAML written by an author from the README: a route whose router's label is misspelt is told so
(at the line the label is written, with the branch it likely means), a route without a branch for a
rule_router's implicit label of unmatched queries is told what that label is, a fixed threshold above what
cosine scores can be is refused before any work when it empties results (warned of once when it sends every
query one way or never stops a loop early; one below that range, an "off" value, loads), and a key indented
under a parallel's last branch is cited at its own line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ragkit import Pipeline
from ragkit.errors import ConfigError, ParamError
from ragkit.filters import ScoreThreshold
from ragkit.pipelines import Route
from ragkit.pipelines._checks import threshold_scale_problem, unranked_router
from ragkit.pipelines.routers import RuleRouter, ScoreRouter
from ragkit.retrievers import BM25, Dense


def _error(tmp_path: Path, text: str) -> str:
    """The message of the error loading ``text`` from a file (after the file's name)."""
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml(f)
    message = str(e.value)
    assert message.startswith(f"{f}: "), message
    return message[len(f"{f}: "):]


# -- 1. a misspelt router label: said of the label, at its line, with the branch it likely means ---------------

MISSPELT_DEFAULT = """\
pipeline:
  - route:
      router:
        rule_router:
          rules: [{label: short, max_words: 4}]
          default: hybird
      branches:
        short: [bm25: {k: 100}]
        hybrid: [dense: {k: 100}]
"""


def test_a_misspelt_router_label_is_said_of_the_label_at_its_line(tmp_path):
    """It said `branches ['hybrid'] can never run ...; 'hybrid': did you mean 'hybird'?` at the branches' line:
    renaming the right branch to the typo, and not saying that the label 'hybird' has no branch."""
    got = _error(tmp_path, MISSPELT_DEFAULT)
    assert got.startswith("line 6: pipeline[0].route.router.rule_router.default: router 'rule_router' gives the "
                          "label 'hybird' (router.rule_router.default), which has no branch: did you mean the "
                          "branch 'hybrid'?"), got
    assert got.endswith("No label reaches 'hybrid', so one of the two names is misspelt: write the label as "
                        "'hybrid', or name the branch 'hybird'. The route's branches are ['short', 'hybrid']."), got
    assert "did you mean 'hybird'" not in got  # one question, then the two fixes: not two contradicting questions


def test_a_misspelt_rule_label_is_cited_at_its_rule(tmp_path):
    text = MISSPELT_DEFAULT.replace("label: short", "label: shrt").replace("default: hybird", "default: hybrid")
    got = _error(tmp_path, text)
    assert got.startswith("line 5: pipeline[0].route.router.rule_router.rules[0].label: router 'rule_router' gives "
                          "the label 'shrt' (router.rule_router.rules[0].label), which has no branch: did you mean "
                          "the branch 'short'?"), got


def test_a_misspelt_score_router_label_in_python_names_its_parameter():
    router = ScoreRouter(threshold=0.5, above="esay")
    with pytest.raises(ParamError, match=r"^route\.branches: router 'score_router' gives the label 'esay' "
                                         r"\(router\.score_router\.above\), which has no branch: did you mean the "
                                         r"branch 'easy'\?"):
        Route(router, {"easy": [], "hard": [BM25()]})


# -- 2. rule_router's implicit label of unmatched queries, without a branch -------------------------------------

NO_DEFAULT = """\
pipeline:
  - route:
      router:
        rule_router:
          rules:
            - {label: short, max_words: 4}
      branches:
        short:
          - bm25: {k: 100}
"""


def test_the_implicit_label_of_unmatched_queries_is_explained(tmp_path):
    """It said `router 'rule_router' can label queries ['default'], which have no branch, and the route has no
    'default'`: a label the author never wrote, and 'default' in two senses."""
    got = _error(tmp_path, NO_DEFAULT)
    assert got == ("line 7: pipeline[0].route.branches: router 'rule_router' gives the queries that none of its "
                   "rules match the label 'default' (its 'default:' parameter, not written here), and no branch has "
                   "that name; branches: ['short']; add a branch named 'default' for those queries, or set the "
                   "router's default: to an existing branch, e.g. `rule_router: {rules: [...], default: short}`"), got
    # either fix loads
    rule = "            - {label: short, max_words: 4}\n"
    assert Pipeline.from_yaml(NO_DEFAULT.replace(rule, rule + "          default: short\n"))
    assert Pipeline.from_yaml(NO_DEFAULT + "        default: [bm25: {k: 10}]\n")


def test_a_written_label_without_a_branch_keeps_the_route_default_hint():
    router = RuleRouter(rules=[{"label": "a", "max_words": 2}], default="other")
    with pytest.raises(ParamError, match=r"can label queries \['other'\], which have no branch.*'default:'") as e:
        Route(router, {"a": [BM25()]})
    assert "not written here" not in str(e.value)


def test_a_default_label_written_as_default_keeps_the_route_default_hint():
    """``default: default`` is written: the label is the author's, not the implicit one."""
    router = RuleRouter(rules=[{"label": "a", "max_words": 2}], default="default")
    with pytest.raises(ParamError, match=r"can label queries \['default'\], which have no branch.*'default:'") as e:
        Route(router, {"a": [BM25()]})
    assert "not written here" not in str(e.value)


# -- 3. a fixed threshold that cosines can never cross -----------------------------------------------------------

UNITS = """\
pipeline:
  - dense: {k: 100}
  - route:
      router: {score_router: {threshold: 15.0}}
      branches:
        easy: []
        hard: [mmr: {k: 50}]
  - score_threshold: {threshold: 5.0}
"""

MIXED = """\
pipeline:
  - route:
      router: {rule_router: {rules: [{min_words: 3, label: long}], default: short}}
      branches:
        long: [bm25: {}]
        short: [dense: {}]
  - score_threshold: {threshold: 5.0}
"""


def _threshold_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ragkit" and ".threshold: " in r.getMessage()]


def test_a_score_threshold_beyond_cosines_is_refused_at_load(tmp_path):
    """Every query returned no documents."""
    got = _error(tmp_path, "pipeline:\n  - dense: {k: 100}\n  - score_threshold: {threshold: 5.0}\n")
    assert got.startswith("line 3: pipeline[1].score_threshold.threshold: 5.0 is outside [-1, 1]"), got
    assert "those of pipeline[0].dense, cosines" in got and "every query keeps no documents" in got, got


def test_a_score_threshold_after_a_route_names_only_the_cosine_branch(tmp_path):
    """It said "every query keeps no documents": the queries routed to bm25 keep theirs (5.0 is a BM25 score);
    only those routed to dense lose every document, which is still refused, and said of them alone."""
    got = _error(tmp_path, MIXED)
    assert got.startswith("line 7: pipeline[1].score_threshold.threshold: 5.0 is outside [-1, 1]"), got
    assert "every query" not in got, got
    assert ("only the queries whose rankings come from pipeline[0].route.branches.short[0].dense keep no documents "
            "(those from pipeline[0].route.branches.long[0].bm25, on another scale, are filtered as usual)") in got, got
    assert "put a score_threshold inside each branch" in got, got


def test_a_score_threshold_after_a_pass_through_branch_names_the_cosines(tmp_path):
    """The 'easy' branch passes the dense cosines on, the 'hard' one maxsim's own scores (not guessed at): it said
    every query keeps no documents.  (mmr's own scores, here before review s50, are rank scores in (0, 1]: a
    threshold of 5 empties its queries too.)"""
    got = _error(tmp_path, UNITS.replace("threshold: 15.0", "threshold: 0.5").replace("mmr: {k: 50}",
                                                                                      "maxsim: {k: 50}"))
    assert got.startswith("line 8: pipeline[2].score_threshold.threshold: 5.0 is outside [-1, 1]"), got
    assert "every query" not in got, got
    assert ("only the queries whose rankings come from pipeline[0].dense keep no documents (those from "
            "pipeline[1].route.branches.hard[0].maxsim, on another scale, are filtered as usual)") in got, got


def test_a_score_router_threshold_beyond_cosines_is_warned_of_once(tmp_path, caplog):
    """It was refused; it sends every query one way, which a pipeline may mean: a warning at load, not again at
    each check (fit, every search)."""
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe = Pipeline.from_yaml(UNITS.replace("threshold: 5.0", "threshold: 0.5"))
        assert unranked_router(pipe) is None and unranked_router(pipe) is None  # what fit and search check
    said = _threshold_warnings(caplog)
    assert len(said) == 1, said
    assert said[0].startswith("pipeline[1].route.router.score_router.threshold: 15.0 is outside [-1, 1]"), said
    assert "those of pipeline[0].dense, cosines" in said[0] and "every query gets the label 'hard'" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):  # what ragkit validate shows, each time it loads it
        Pipeline.from_yaml(UNITS.replace("threshold: 5.0", "threshold: 0.5"))
    assert _threshold_warnings(caplog) == said


def test_a_loop_judge_threshold_beyond_cosines_is_warned_of(tmp_path, caplog):
    """It was refused; the loop always runs max_iters: wasteful, not wrong."""
    text = ("pipeline:\n  - loop:\n      body: [dense: {}]\n      until: {score_reached: {threshold: 3.0}}\n"
            "      max_iters: 2\n")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        Pipeline.from_yaml(text)
    said = _threshold_warnings(caplog)
    assert len(said) == 1 and said[0].startswith("pipeline[0].loop.until.score_reached.threshold: 3.0 is outside "
                                                 "[-1, 1]"), said
    assert "for every query, the loop never stops before max_iters" in said[0], said


@pytest.mark.parametrize("text", [
    "pipeline: [dense: {}, score_threshold: {threshold: -2.0}]",  # removes nothing: an "off" value of a sweep
    "pipeline: [dense: {}, score_threshold: {threshold: -1.5, k_min: 2}]",
    "pipeline: [dense: {}, {route: {router: {score_router: {threshold: -3.0}}, branches: {easy: [], hard: []}}}]",
    "pipeline: [dense: {}, {route: {router: {score_router: {feature: gap, threshold: -0.5}}, "
    "branches: {easy: [], hard: []}}}]",
    "pipeline: [{loop: {body: [dense: {}], until: {score_reached: {threshold: -3.0}}, max_iters: 2}}]",
])
def test_thresholds_below_the_cosine_range_load_silently(text, caplog):
    """They were refused: each keeps every document, sends every query 'above', or stops each loop after its
    first iteration, as the -inf those steps learn does; no threshold on another scale (BM25's) looks like them."""
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe = Pipeline.from_yaml(text)
        assert unranked_router(pipe) is None
    assert _threshold_warnings(caplog) == []


@pytest.mark.parametrize("steps, at", [
    ([Dense(), ScoreThreshold(threshold=1.5)], "pipeline[1].score_threshold.threshold: 1.5"),
    ([Route(RuleRouter(rules=[{"label": "a", "max_words": 2}], default="b"), {"a": [BM25()], "b": [Dense()]}),
      ScoreThreshold(threshold=3.0, k_min=2)], "pipeline[1].score_threshold.threshold: 3.0 is outside [-1, 1]"),
])
def test_thresholds_above_the_cosine_range_are_refused_in_python(steps, at):
    pipe = Pipeline(steps)
    problem = unranked_router(pipe)  # what fit and search check before any work
    assert problem is not None and str(problem).startswith(at), problem


def test_a_gap_threshold_beyond_its_range_is_warned_of_in_python(caplog):
    pipe = Pipeline([Dense(), Route(ScoreRouter(feature="gap", threshold=2.5), {"easy": [], "hard": []})])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert unranked_router(pipe) is None
        assert unranked_router(pipe) is None
    said = _threshold_warnings(caplog)
    assert len(said) == 1 and said[0].startswith("pipeline[1].route.router.score_router.threshold: 2.5 is outside "
                                                 "[0, 2]"), said


@pytest.mark.parametrize("text", [
    "pipeline: [dense: {}, score_threshold: {threshold: 0.5}]",
    "pipeline: [dense: {}, score_threshold: {threshold: 1.0}]",
    "pipeline: [bm25: {}, score_threshold: {threshold: 5.0}]",  # BM25's scale is not bounded: not guessed
    "pipeline: [dense: {metric: ip}, score_threshold: {threshold: 5.0}]",
    "pipeline: [dense: {}, {route: {router: {score_router: {feature: rel_gap, threshold: 3.0}}, "
    "branches: {easy: [], hard: []}}}]",
    "pipeline: [dense: {}, {route: {router: {score_router: {learn: true}}, branches: {easy: [], hard: []}}}]",
    "pipeline: [dense: {}, maxsim: {}, score_threshold: {threshold: 5.0}]",  # a reranker's own scores, not bounded
])
def test_thresholds_on_other_scales_still_load(text, caplog):
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe = Pipeline.from_yaml(text)
        assert threshold_scale_problem(pipe) is None
    assert _threshold_warnings(caplog) == []


# -- 4. a key indented under a parallel's last branch: cited at its own line --------------------------------------

def test_a_composite_key_under_the_last_branch_cites_its_own_line(tmp_path):
    """It cited line 5, the branch's operator, not line 6 where fuse: is written."""
    text = ("pipeline:\n  - parallel:\n      branches:\n        - bm25: {k: 100}\n        - dense: {k: 100}\n"
            "          fuse:\n            rrf: {k: 60}\n")
    assert _error(tmp_path, text) == (
        "line 6: pipeline[0].parallel.branches[1].fuse: fuse is a key of parallel, not of dense: dedent it to the "
        "level of 'branches:' (written under dense, it makes branches[1] a mapping of 2 keys, ['dense', 'fuse'], "
        "where one operator is expected)")
