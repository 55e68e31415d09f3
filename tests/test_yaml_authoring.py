"""Pipeline-authoring review (YAML): an empty fuser / judge / router mapping, a second generate step, the steps
after a generate step, mmr's fetch_k beyond the ranking that reaches it, and a pipeline's description in its
constructor and repr."""

from __future__ import annotations

import pytest

from ragkit import Pipeline
from ragkit.errors import ConfigError, ParamError
from ragkit.filters import TopK
from ragkit.generators import Generate
from ragkit.retrievers import BM25


def _cli(*args: object):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})


def _flat(text: str) -> str:
    return " ".join(text.split())


EMPTY = [
    ("pipeline: [parallel: {branches: [bm25: {}, dense: {}], fuse: {}}]", "pipeline[0].parallel.fuse",
     "expected exactly one fuser key, got none (an empty mapping, {}); write one fuser (rrf, weighted)"),
    ("pipeline: [bm25: {}, loop: {body: [prf: {}, bm25: {}], until: {}}]", "pipeline[1].loop.until",
     "expected exactly one judge key, got none (an empty mapping, {}); write one judge (max_only, score_reached,"),
    ("pipeline: [route: {router: {}, branches: {a: [bm25: {}]}}]", "pipeline[0].route.router",
     "expected exactly one router key, got none (an empty mapping, {}); write one router (rule_router, "
     "score_router)"),
    ("pipeline: [{}]", "pipeline[0]",
     "expected exactly one operator key, got none (an empty mapping, {}); write one operator"),
]


@pytest.mark.parametrize("text, where, said", EMPTY)
def test_an_empty_mapping_where_one_operator_goes_is_said_not_an_index_error(text, where, said):
    """Review: `fuse: {}`, `until: {}` and `router: {}` raised a bare IndexError (an empty list of keys made every
    fuser an 'owner' of them, then `_and([])` indexed it)."""
    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml(text)
    assert e.value.path == where
    assert str(e.value).startswith(f"{where}: {said}"), str(e.value)


def test_validate_says_an_empty_fuser_in_one_line_at_its_line(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("pipeline:\n  - parallel:\n      branches: [bm25: {}, dense: {}]\n      fuse: {}\n")
    res = _cli("validate", p)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "IndexError" not in res.output
    assert "line 4: pipeline[0].parallel.fuse: expected exactly one fuser key, got none" in _flat(res.output)
    assert "e.g. `fuse: {rrf: {k: 60}}`" in _flat(res.output)  # (the example builds)


def test_a_second_generate_step_is_refused_in_python_and_yaml():
    """Review: `[bm25, generate, mmr, generate]` ran two language models; the second answer replaced the first."""
    with pytest.raises(ParamError, match=r"^pipeline\[3\]\.generate: a second generator \(generate\) after the one "
                                         r"at pipeline\[1\]\.generate: .* replace"):
        BM25() | Generate() | TopK(k=3) | Generate()
    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml("pipeline:\n  - bm25: {}\n  - route:\n      router: {rule_router: {rules: [{label: short, "
                           "max_words: 4}], default: long}}\n      branches:\n        short: [generate: {}]\n"
                           "        long: [top_k: {k: 3}]\n  - generate: {}\n")
    assert e.value.path == "pipeline[2].generate"
    assert "after the one at pipeline[1].route, which holds a generate" in str(e.value)
    with pytest.raises(ConfigError) as e:  # in a branch: the branch's own paths
        Pipeline.from_yaml("pipeline:\n  - bm25: {}\n  - parallel:\n      branches:\n        - bm25: {}\n"
                           "        - [top_k: {k: 5}, generate: {}, generate: {top_k: 2}]\n")
    assert e.value.path == "pipeline[1].parallel.branches[1][2].generate"
    assert "after the one at pipeline[1].parallel.branches[1][1].generate" in str(e.value)


def test_validate_gives_the_line_of_a_second_generate(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("pipeline:\n  - bm25: {}\n  - generate: {}\n  - mmr: {}\n  - generate: {}\n")
    res = _cli("validate", p)
    assert res.exit_code == 2 and "line 5: pipeline[3].generate: a second generator" in _flat(res.output), res.output


def test_one_generate_per_route_branch_is_fine():
    pipe = Pipeline.from_yaml("pipeline:\n  - bm25: {}\n  - route:\n      router: {rule_router: {rules: [{label: "
                              "short, max_words: 4}], default: long}}\n      branches:\n        short: [generate: {}]\n"
                              "        long: [top_k: {k: 3}, generate: {top_k: 2}]\n")
    assert [s.name for s in pipe.steps] == ["bm25", "route"]


@pytest.mark.parametrize("steps, noted", [
    ("[dense: {}, generate: {}, top_k: {k: 3}]",  # cuts 2 of the 5 chunks the answer read
     "pipeline[2].top_k comes after pipeline[1].generate: it changes the ranking passed on with the answer as its "
     "sources (run.rankings), which is then not what the answer was written from (its first 5 documents as they "
     "reached generate); ragkit eval, train and search run this pipeline only up to pipeline[1].generate"),
    ("[dense: {k: 100}, generate: {}, top_k: {k: 5}]",  # keeps the 5 it read: only eval's cut is said
     "pipeline[2].top_k comes after pipeline[1].generate: ragkit eval, train and search run this pipeline only up "
     "to pipeline[1].generate, so they score or show the rankings without it; put it before generate to have them "
     "count it"),
    ("[bm25: {}, parallel: {branches: [[top_k: {k: 50}, generate: {}, mmr: {k: 50}], top_k: {k: 9}]}]",
     "pipeline[1].parallel.branches[0][2].mmr comes after pipeline[1].parallel.branches[0][1].generate: it changes "
     "the ranking passed on with the answer as its sources (run.rankings), which is then not what the answer was "
     "written from (its first 5 documents as they reached generate); put it before generate"),
])
def test_validate_notes_the_steps_after_generate(tmp_path, steps, noted):
    """Review: `[dense, generate, top_k: {k: 5}]` was 'ok' silently, while ragkit eval drops generate and every
    step after it, and a later top_k cut the sources below what the answer was written from."""
    p = tmp_path / "p.yaml"
    p.write_text(f"pipeline: {steps}\n")
    res = _cli("validate", p)
    assert res.exit_code == 0, res.output
    assert f"note: {noted}" in _flat(res.stderr), res.stderr


@pytest.mark.parametrize("steps, where", [
    ("[bm25: {}, [top_k: {k: 9}, generate: {}], bm25: {k: 3}]", "pipeline[2].bm25 comes after pipeline[1]:"),
    ("[bm25: {}, route: {router: {rule_router: {rules: [{label: a, max_words: 4}], default: a}}, branches: "
     "{a: [generate: {}]}}, top_k: {k: 3}]", "pipeline[2].top_k comes after pipeline[1].route:"),
])
def test_validate_does_not_say_eval_cuts_a_nested_generate(tmp_path, steps, where):
    """Review: a generate inside a nested list or a route was said to be where ragkit eval, train and search
    stop, but they cut the top list at its own generate step only (the nested one passes the rankings on
    and the steps after it run and are scored)."""
    from ragkit.cli._pipeline import _without_generation

    p = tmp_path / "p.yaml"
    p.write_text(f"pipeline: {steps}\n")
    assert _without_generation(Pipeline.from_yaml(p.read_text()), "--pipeline P", note=False).to_yaml() \
        == Pipeline.from_yaml(p.read_text()).to_yaml()
    res = _cli("validate", p)
    assert res.exit_code == 0, res.output
    said = _flat(res.stderr)
    assert f"note: {where} it changes the ranking passed on" in said and "only up to" not in said, res.stderr


def test_a_second_generate_under_a_label_with_a_comma_has_its_whole_path():
    """Review: the error's path was cut at the first comma of its message, so a route label 'a,b' gave
    'pipeline[1].route.branches.a'."""
    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml("pipeline:\n  - bm25: {}\n  - route:\n      router: {rule_router: {rules: [{label: 'a,b', "
                           "max_words: 4}], default: 'a,b'}}\n      branches:\n        'a,b': [generate: {}, "
                           "generate: {}]\n")
    assert e.value.path == "pipeline[1].route.branches.a,b[1].generate", e.value.path


def test_validate_does_not_note_a_generate_at_the_end(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("pipeline: [dense: {}, top_k: {k: 5}, generate: {}]\n")
    res = _cli("validate", p)
    assert res.exit_code == 0 and "comes after" not in res.stderr, res.output


def test_validate_notes_an_mmr_pool_beyond_what_reaches_it(tmp_path):
    """Review: `[dense: {k: 10}, mmr: {k: 10, fetch_k: 50}]` only reorders dense's 10, and validate said nothing."""
    p = tmp_path / "p.yaml"
    p.write_text("pipeline: [dense: {k: 10}, mmr: {k: 10, fetch_k: 50}]\n")
    res = _cli("validate", p)
    assert res.exit_code == 0, res.output
    assert ("note: pipeline[1].mmr picks from fetch_k: 50 documents, but pipeline[0].dense before it returns at most "
            "10 (its k), so it only reorders those 10; give pipeline[0].dense a k of 50 or more, or mmr a fetch_k of "
            "10 or less") in _flat(res.stderr), res.stderr
    p.write_text("pipeline: [dense: {k: 50}, mmr: {k: 10, fetch_k: 50}]\n")
    assert "fetch_k" not in _cli("validate", p).stderr


def test_a_pipelines_repr_keeps_its_description():
    """Review: repr dropped `description:`, so eval(repr(p)).to_yaml() differed from p.to_yaml()."""
    from ragkit.filters import TopK  # noqa: F401  (for eval)

    p = Pipeline.from_yaml("description: lexical, then the best 5\npipeline: [bm25: {k: 50}, top_k: {k: 5}]\n")
    assert repr(p) == "Pipeline([BM25(k=50), TopK(k=5)], description='lexical, then the best 5')"
    again = eval(repr(p))
    assert again.description == p.description and again.to_yaml() == p.to_yaml()
    assert Pipeline([BM25()], description="x").to_yaml().startswith("description: x\n")
    assert repr(Pipeline([BM25()])) == "Pipeline([BM25()])"
    with pytest.raises(ParamError, match=r"^Pipeline\.description: expected text \(a str\) or None, got int 3"):
        Pipeline([BM25()], description=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Pipeline([BM25()], "x")  # type: ignore[misc]  # keyword-only
