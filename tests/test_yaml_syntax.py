"""Pipeline YAML read as its author means it: YAML 1.2 numbers (no 1.1 octal or base-60 values), one
merge key per mapping, a whole message for a file of two documents, ``x-`` keys that hold anchors."""

from __future__ import annotations

import re

import pytest

from ragkit import Pipeline
from ragkit.errors import ConfigError


def _k(text: str) -> int:
    (top,) = Pipeline.from_yaml(text).steps
    return top.params.k


def test_numbers_read_as_yaml_1_2():
    """``k: 010`` was 8 (YAML 1.1 octal) and ``threshold: 1:30`` 90.0 (base 60), silently."""
    assert _k("pipeline:\n  - top_k: {k: 010}\n") == 10
    assert _k("pipeline:\n  - top_k: {k: 1e3}\n") == 1000
    assert _k("pipeline:\n  - top_k: {k: 0x10}\n") == 16
    with pytest.raises(ConfigError, match=r"threshold.*1:30"):
        Pipeline.from_yaml("pipeline:\n  - bm25: {}\n  - score_threshold: {threshold: 1:30}\n")
    (_, thr) = Pipeline.from_yaml("pipeline:\n  - bm25: {}\n  - score_threshold: {threshold: 1e-3}\n").steps
    assert thr.params.threshold == 0.001


def test_a_second_merge_key_in_one_mapping_is_refused():
    """``{<<: *a, <<: {k: 70}}`` kept one of the two silently (k was 50)."""
    text = "x-a: &a {k: 50}\npipeline:\n  - bm25: {<<: *a, <<: {k: 70}}\n"
    with pytest.raises(ConfigError, match=r"line 3.*'<<' \(a merge key\) appears twice.*<<: \[\*a, \*b\]"):
        Pipeline.from_yaml(text)
    both = "x-a: &a {k: 50}\nx-b: &b {b: 0.5}\npipeline:\n  - bm25: {<<: [*a, *b]}\n"
    (bm,) = Pipeline.from_yaml(both).steps
    assert (bm.params.k, bm.params.b) == (50, 0.5)


def test_x_keys_hold_anchors_and_other_top_level_keys_are_refused():
    (bm,) = Pipeline.from_yaml("x-defaults: &d {k: 7}\npipeline:\n  - bm25: *d\n").steps
    assert bm.params.k == 7
    with pytest.raises(ConfigError, match=r"defaults: unknown top-level key.*an 'x-' key of your own"):
        Pipeline.from_yaml("defaults: &d {k: 7}\npipeline:\n  - bm25: *d\n")


def test_two_documents_in_one_file_are_named_whole():
    """The message was 'not valid pipeline YAML: but found another document' (PyYAML's context lost)."""
    with pytest.raises(ConfigError, match="expected a single document in the stream, but found another document"):
        Pipeline.from_yaml("pipeline:\n  - bm25: {}\n---\npipeline:\n  - bm25: {}\n")


def test_a_scalar_for_nested_settings_is_explained():
    """pydantic's 'Input should be a valid dictionary or instance of AdaptConfig' was the message."""
    with pytest.raises(ConfigError, match=r"pipeline\[0\]\.dense\.adapt: expected a mapping of adapt's settings "
                                          r"\(e\.g\. adapt: \{\} for the defaults\), got True"):
        Pipeline.from_yaml("pipeline:\n  - dense: {adapt: true}\n")
    with pytest.raises(ConfigError, match=r"rules\[0\]: expected a mapping of settings \(a Rule\), got 'short'"):
        Pipeline.from_yaml("pipeline:\n  - bm25: {}\n  - route: {router: {rule_router: {rules: [short]}}, "
                           "branches: {a: []}}\n")


def test_a_file_s_problems_name_their_lines(tmp_path):
    """A file's content errors named the path inside it only: in a long file the line is what an editor
    goes to.  Each problem gets the line of the key it is about, through anchors and merge keys too."""
    f = tmp_path / "p.yaml"
    f.write_text("# hybrid\n"
                 "x-dense: &d {k: 100, metrc: cos}\n"
                 "pipeline:\n"
                 "  - parallel:\n"
                 "      branches:\n"
                 "        - bm25: {k: -1}\n"
                 "        - dense:\n"
                 "            <<: *d\n"
                 "      fuse:\n"
                 "        rrf:\n"
                 "          k: 0\n"
                 "  - top_k: {kk: 3}\n")
    with pytest.raises(ConfigError) as exc:
        Pipeline.from_yaml(f)
    lines = str(exc.value).splitlines()
    assert lines[0] == f"{f}:"
    assert [ln.split(": ")[0] for ln in lines[1:]] == ["line 6", "line 2", "line 11", "line 12"], lines
    assert lines[1].startswith("line 6: pipeline[0].parallel.branches[0].bm25.k: expected a positive integer")
    f.write_text("- bm25: {}\n- top_k:\n    k: x\n")  # a file that is the list of steps alone
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(f))}: line 3: pipeline\[1\]\.top_k\.k: "):
        Pipeline.from_yaml(f)
    with pytest.raises(ConfigError, match=r"^pipeline\[1\]\.top_k\.k: "):  # YAML text: the path is all there is
        Pipeline.from_yaml(f.read_text())


def test_description_is_kept_by_to_yaml_and_save(tmp_path):
    """``description:`` was read and dropped: to_yaml() and a saved pipeline.yaml lost the file's own text."""
    pipe = Pipeline.from_yaml("description: BM25 then the top 5\npipeline:\n  - bm25: {k: 50}\n  - top_k: {k: 5}\n")
    assert pipe.description == "BM25 then the top 5"
    assert pipe.to_yaml().startswith("description: BM25 then the top 5\npipeline:\n")
    assert Pipeline.from_yaml(pipe.to_yaml()).description == pipe.description
    pipe.save(tmp_path / "saved")
    assert Pipeline.load(tmp_path / "saved").description == pipe.description
    assert "description" not in Pipeline.from_yaml("pipeline: [bm25: {}]").to_yaml()
    with pytest.raises(ConfigError, match=r"description: expected text, got list \['a'\]"):
        Pipeline.from_yaml("description: [a]\npipeline: [bm25: {}]\n")
