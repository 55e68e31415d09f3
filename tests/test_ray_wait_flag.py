"""``$RAGKIT_RAY_WAIT_FOR_CPUS`` read as the project's other boolean variables (``env_flag``): ``on`` submits to a
cluster without CPUs (it was refused, its message telling the user to set the variable already set), a value of
neither kind (``2``) is a ParamError naming the variable (it was silently false).  No Ray needed: a fake cluster."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ragkit import _ray
from ragkit.errors import ParamError

NO_CPUS = SimpleNamespace(cluster_resources=lambda: {}, available_resources=lambda: {})


@pytest.mark.parametrize("value", ["on", "ON", " yes ", "true", "1"])
def test_each_true_spelling_submits_anyway(monkeypatch, caplog, value):
    monkeypatch.setenv("RAGKIT_RAY_WAIT_FOR_CPUS", value)
    with caplog.at_level("WARNING", logger="ragkit"):
        _ray._check_cpus(NO_CPUS, "sharded.fit")  # no refusal
    assert "sharded.fit: the Ray cluster has 0 CPUs now; submitting anyway" in caplog.text


@pytest.mark.parametrize("value", ["off", "0", "no", ""])
def test_each_false_spelling_refuses_a_cluster_without_cpus(monkeypatch, value):
    monkeypatch.setenv("RAGKIT_RAY_WAIT_FOR_CPUS", value)
    with pytest.raises(_ray.ShardError, match=r"^sharded\.fit: the Ray cluster has 0 CPUs"):
        _ray._check_cpus(NO_CPUS, "sharded.fit")


@pytest.mark.parametrize("value", ["2", "y", "enable"])
def test_a_value_of_neither_kind_is_a_param_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("RAGKIT_RAY_WAIT_FOR_CPUS", value)
    with pytest.raises(ParamError, match=rf"^RAGKIT_RAY_WAIT_FOR_CPUS: expected 1, true, yes or on .*got '{value}'"):
        _ray._check_cpus(NO_CPUS, "sharded.fit")


def test_a_cluster_with_cpus_never_reads_the_variable(monkeypatch):
    monkeypatch.setenv("RAGKIT_RAY_WAIT_FOR_CPUS", "2")
    _ray._check_cpus(SimpleNamespace(cluster_resources=lambda: {"CPU": 4.0}), "sharded.fit")
