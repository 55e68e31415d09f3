"""``generate``'s ``disk_half_life_s``: the wall-clock half-life of the chunk cache's disk-tier files, plumbed
from the operator's parameters (YAML) through :class:`~ragkit.generators.local.LocalGenerator` into
:class:`~ragkit.caches.ChunkKVCache` (before, only ``ChunkKVCache(disk_half_life_s=...)`` could set it).

Parameter-level tests build nothing; the one that loads a model uses the tiny 4-layer checkpoint of
``tests/test_cachecraft.py`` (seconds).
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from test_cachecraft import tiny  # noqa: F401

from ragkit.caches import ChunkKVCache
from ragkit.errors import ParamError
from ragkit.generators.local import LocalGenerator
from ragkit.generators.operator import LOCAL_ONLY, Generate, GenerateParams
from ragkit.pipelines import Pipeline


def test_the_default_is_the_chunk_caches():
    """Defaults unchanged: one hour everywhere, and a default generate step's YAML does not mention it."""
    cache_default = inspect.signature(ChunkKVCache).parameters["disk_half_life_s"].default
    assert GenerateParams().disk_half_life_s == cache_default == 3600
    assert inspect.signature(LocalGenerator).parameters["disk_half_life_s"].default == cache_default
    assert "disk_half_life_s" not in Generate(cache_dir="kv").to_yaml()
    assert "disk_half_life_s" in LOCAL_ONLY


@pytest.mark.parametrize("value, saved", [("60", "60.0"), ("0.5", "0.5"), ("null", "null")])
def test_yaml_round_trip(value, saved):
    text = f"pipeline:\n  - generate: {{cache_dir: kv, disk_half_life_s: {value}}}\n"
    (step,) = Pipeline.from_yaml(text).steps
    expected = None if value == "null" else float(value)
    assert step.params.disk_half_life_s == expected
    out = Pipeline([step]).to_yaml()
    assert f"disk_half_life_s: {saved}" in out
    (again,) = Pipeline.from_yaml(out).steps
    assert again == step and again.params.disk_half_life_s == expected


def test_infinity_is_refused_with_a_pointer_to_null():
    """``.inf`` would be saved as ``null`` (JSON has no infinity): ``null`` is the spelling of "no decay"."""
    with pytest.raises(ParamError, match=r"generate\.disk_half_life_s: .*got inf.*write null"):
        Pipeline.from_yaml("pipeline:\n  - generate: {cache_dir: kv, disk_half_life_s: .inf}\n")
    with pytest.raises(ParamError, match=r"generate\.disk_half_life_s: .*write null \(None in Python\)"):
        Generate(cache_dir="kv", disk_half_life_s=math.inf)


def test_refused_without_a_disk_tier():
    with pytest.raises(ParamError, match=r"disk_half_life_s=60\.0 has no effect without cache_dir"):
        Generate(disk_half_life_s=60)
    with pytest.raises(ParamError, match=r"disk_half_life_s=None has no effect without cache_dir"):
        Pipeline.from_yaml("pipeline:\n  - generate: {disk_half_life_s: null}\n")
    with pytest.raises(ParamError, match=r"disk_half_life_s set, but it configures the local backend only"):
        Generate(backend="langchain", disk_half_life_s=60)


@pytest.mark.parametrize("bad, expected", [("0", r"expected a value > 0\.0, got 0"),
                                           ("-1", r"expected a value > 0\.0, got -1"),
                                           ("'1h'", r"expected a number, got '1h'"),
                                           ("true", r"expected a number, got True; YAML reads unquoted"),
                                           ("[60]", r"expected a number, got \[60\]")])
def test_bad_values_are_refused_with_the_path(bad, expected):
    with pytest.raises(ParamError, match=r"generate\.disk_half_life_s: " + expected):
        Pipeline.from_yaml(f"pipeline:\n  - generate: {{cache_dir: kv, disk_half_life_s: {bad}}}\n")


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), -math.inf, True, "1h", None])
def test_local_generator_checks_it(bad, tmp_path):
    with pytest.raises(ParamError, match=r"LocalGenerator: disk_half_life_s=.*; expected a number of seconds > 0, "
                                         r"or math.inf") as e:
        LocalGenerator(disk_dir=str(tmp_path), disk_half_life_s=bad)
    assert e.value.path == "disk_half_life_s"


def test_local_generator_needs_a_disk_tier_for_it(tmp_path):
    with pytest.raises(ParamError, match=r"disk_half_life_s=60 ages the chunk cache's disk tier files, but there "
                                         r"is none \(disk_dir=None\)"):
        LocalGenerator(disk_half_life_s=60)
    assert LocalGenerator(disk_half_life_s=3600).disk_half_life_s == 3600.0  # the default: fine without one
    g = LocalGenerator(disk_dir=str(tmp_path), disk_half_life_s=np.float32(60))  # numpy scalars become floats
    assert type(g.disk_half_life_s) is float and g.disk_half_life_s == 60.0
    assert LocalGenerator(disk_dir=str(tmp_path), disk_half_life_s=math.inf).disk_half_life_s == math.inf


def test_the_operator_passes_it_to_the_generator(tmp_path):
    """Without loading a model: the operator's fit builds the LocalGenerator (null: math.inf, no decay)."""
    for value, expected in ((None, math.inf), (60, 60.0), (3600, 3600.0)):
        g = Generate(cache_dir=str(tmp_path / "kv"), disk_half_life_s=value)
        g._fit(None, None, None)  # type: ignore[arg-type]
        assert g.engine_.disk_half_life_s == expected  # type: ignore[union-attr]
    g = Generate(mode="naive")
    g._fit(None, None, None)  # type: ignore[arg-type]
    assert g.engine_.disk_half_life_s == 3600.0  # type: ignore[union-attr]


def test_the_value_reaches_the_chunk_cache(tiny, tmp_path):  # noqa: F811
    for value, expected in ((None, math.inf), (60, 60.0), (3600, 3600.0)):
        g = Generate(model=tiny[0], cache_dir=str(tmp_path / "kv"), disk_half_life_s=value)
        g._fit(None, None, None)  # type: ignore[arg-type]
        engine = g.engine_
        assert isinstance(engine, LocalGenerator)
        cache = engine.load().chunk_cache
        assert cache is not None and cache.disk_half_life_s == expected


def test_several_local_only_settings_with_langchain_are_named_in_the_plural():
    with pytest.raises(ParamError, match=r"max_new_tokens, disk_half_life_s set, but they configure the local backend "
                                         r"only; .* so drop them"):
        Generate(backend="langchain", max_new_tokens=5, disk_half_life_s=60.0)
