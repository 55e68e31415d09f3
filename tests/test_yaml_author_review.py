"""Pipeline YAML written by an author from the README: a route whose router's label is misspelt is told so
(at the line the label is written, with the branch it likely means), a route without a branch for a
rule_router's implicit label of unmatched queries is told what that label is, a fixed threshold that cosine
scores can never cross is refused before any work, and a key indented under a parallel's last branch is cited
at its own line."""

from __future__ import annotations

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
    assert "branches ['hybrid'] can never run" in got  # the other half of the same misspelling
    assert got.index("did you mean the branch 'hybrid'") < got.index("did you mean 'hybird'"), got


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


def test_a_score_router_threshold_beyond_cosines_is_refused_at_load(tmp_path):
    """It validated, then sent every query to 'hard'."""
    got = _error(tmp_path, UNITS)
    assert got.startswith("line 4: pipeline[1].route.router.score_router.threshold: 15.0 is outside [-1, 1]"), got
    assert "those of pipeline[0].dense, cosines" in got and "every query gets the label 'hard'" in got, got


def test_a_score_threshold_beyond_cosines_is_refused_at_load(tmp_path):
    """It validated, then every query returned no documents (also those routed through the pass-through branch,
    whose rankings are still the dense cosines)."""
    got = _error(tmp_path, UNITS.replace("threshold: 15.0", "threshold: 0.5"))
    assert got.startswith("line 8: pipeline[2].score_threshold.threshold: 5.0 is outside [-1, 1]"), got
    assert "every query keeps no documents" in got, got


@pytest.mark.parametrize("steps, at", [
    ([Dense(), ScoreThreshold(threshold=-1.5)], "pipeline[1].score_threshold.threshold: -1.5"),
    ([Dense(), Route(ScoreRouter(feature="gap", threshold=2.5), {"easy": [], "hard": []})],
     "pipeline[1].route.router.score_router.threshold: 2.5 is outside [0, 2]"),
])
def test_thresholds_out_of_the_cosine_range_are_refused_in_python(steps, at):
    pipe = Pipeline(steps)
    problem = unranked_router(pipe)  # what fit and search check before any work
    assert problem is not None and str(problem).startswith(at), problem


def test_a_loop_judge_threshold_beyond_cosines_is_refused(tmp_path):
    text = ("pipeline:\n  - loop:\n      body: [dense: {}]\n      until: {score_reached: {threshold: 3.0}}\n"
            "      max_iters: 2\n")
    got = _error(tmp_path, text)
    assert got.startswith("line 4: pipeline[0].loop.until.score_reached.threshold: 3.0 is outside [-1, 1]"), got
    assert "no query's loop stops before max_iters" in got, got


@pytest.mark.parametrize("text", [
    "pipeline: [dense: {}, score_threshold: {threshold: 0.5}]",
    "pipeline: [dense: {}, score_threshold: {threshold: 1.0}]",
    "pipeline: [bm25: {}, score_threshold: {threshold: 5.0}]",  # BM25's scale is not bounded: not guessed
    "pipeline: [dense: {metric: ip}, score_threshold: {threshold: 5.0}]",
    "pipeline: [dense: {}, {route: {router: {score_router: {feature: rel_gap, threshold: 3.0}}, "
    "branches: {easy: [], hard: []}}}]",
    "pipeline: [dense: {}, {route: {router: {score_router: {learn: true}}, branches: {easy: [], hard: []}}}]",
    "pipeline: [dense: {}, mmr: {}, score_threshold: {threshold: 5.0}]",  # a reranker's own scores
])
def test_thresholds_on_other_scales_still_load(text):
    pipe = Pipeline.from_yaml(text)
    assert threshold_scale_problem(pipe) is None


# -- 4. a key indented under a parallel's last branch: cited at its own line --------------------------------------

def test_a_composite_key_under_the_last_branch_cites_its_own_line(tmp_path):
    """It cited line 5, the branch's operator, not line 6 where fuse: is written."""
    text = ("pipeline:\n  - parallel:\n      branches:\n        - bm25: {k: 100}\n        - dense: {k: 100}\n"
            "          fuse:\n            rrf: {k: 60}\n")
    assert _error(tmp_path, text) == (
        "line 6: pipeline[0].parallel.branches[1].fuse: fuse is a key of parallel, not of dense: dedent it to the "
        "level of 'branches:' (written under dense, it makes branches[1] a mapping of 2 keys, ['dense', 'fuse'], "
        "where one operator is expected)")
