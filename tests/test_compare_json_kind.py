"""``ragkit compare`` asks of each argument whether it is a pipeline rather than results
(:func:`ragkit.eval.compare.pipeline_kind`); a results JSON under 1 MiB went through the pure-Python YAML
parser (~2.5 s for an eval of ~4,400 queries), so it is now read as JSON when it is JSON."""

from __future__ import annotations

import json

import pytest

import ragkit.pipelines.yaml as yaml_mod
from ragkit.eval.compare import pipeline_kind


@pytest.fixture
def no_yaml(monkeypatch):
    calls: list[object] = []

    def parse(path, *a, **k):
        calls.append(path)
        raise AssertionError("the YAML parser was called")

    monkeypatch.setattr(yaml_mod, "parse_yaml_text", parse)
    return calls


def test_a_results_json_is_classified_without_the_yaml_parser(tmp_path, no_yaml):
    res = tmp_path / "r.json"
    res.write_text(json.dumps({"pipeline": "pipeline:\n- bm25: {}\n", "metrics": {"ndcg@10": 0.5},
                               "per_query": {f"q{i}": {"ndcg@10": 0.5} for i in range(2000)}}, indent=2))
    assert pipeline_kind(res) is None and no_yaml == []


def test_a_pipeline_written_as_json_is_still_a_pipeline(tmp_path, no_yaml):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"pipeline": [{"bm25": {}}]}))
    assert pipeline_kind(p) == "a pipeline YAML file" and no_yaml == []
    steps = tmp_path / "steps.json"
    steps.write_text(json.dumps([{"bm25": {"k": 10}}]))
    assert pipeline_kind(steps) == "a pipeline YAML file"


def test_yaml_flow_syntax_still_goes_to_the_yaml_parser(tmp_path):
    flow = tmp_path / "flow.yaml"
    flow.write_text("{pipeline: [{bm25: {k: 10}}]}\n")  # YAML flow mapping, not JSON
    assert pipeline_kind(flow) == "a pipeline YAML file"
