"""RagkitGenerator copies and settings as the ``generate`` step checks them.

- ``model_copy`` ran no check and shared the original's ``LocalGenerator``: ``update={"max_new_tokens": 0}``,
  ``{"mode": "bogus"}``, an unknown key or a ``cache_dir`` that is a file were accepted, and a new ``cache_dir``
  was ignored (the copy answered from the original's cache).
- ``max_new_tokens=True`` was taken as 1 (pydantic's lax mode), which the ``generate`` step refuses.
- ``configurable_fields`` of a RagkitGenerator given ``generator=`` was refused at each call (LangChain passes
  every field, at its default too: "generator given with model, gguf_file, ...").
- ``temperature=0.7`` was answered "did you mean generator?".

The tiny 4-layer test model (``tiny``) keeps this offline; no check here loads a model unless it answers.
"""

from __future__ import annotations

import copy

import pytest
from langchain_core.runnables import ConfigurableField
from test_cachecraft import TINY_Q, tiny  # noqa: F401

from ragkit.errors import ParamError
from ragkit.generators.local import LocalGenerator
from ragkit.integrations.langchain import RagkitGenerator, RagkitRetriever

X = {"question": TINY_Q, "documents": ["Scurvy is caused by a lack of vitamin C."]}


@pytest.fixture
def gen(tiny):  # noqa: F811
    return RagkitGenerator(model=tiny[0], max_new_tokens=2, storage_dtype="float32")


def test_model_copy_builds_a_generator_of_its_own(gen, tmp_path):
    plain = gen.model_copy()
    assert plain.local_generator is not gen.local_generator
    assert plain.model_fields_set == gen.model_fields_set and plain.max_new_tokens == 2
    moved = gen.model_copy(update={"cache_dir": str(tmp_path / "cc"), "max_new_tokens": 3})
    assert moved.local_generator.disk_dir == str(tmp_path / "cc") and gen.local_generator.disk_dir is None
    assert moved.max_new_tokens == 3 and gen.max_new_tokens == 2


@pytest.mark.parametrize("update, said", [
    ({"max_new_tokens": 0}, "RagkitGenerator.max_new_tokens: expected a positive integer, got 0"),
    ({"mode": "bogus"}, "RagkitGenerator.mode: expected one of 'full', 'prefix', 'naive' or"),
    ({"max_new_tokens": True}, "RagkitGenerator.max_new_tokens: expected an integer, got True; a boolean"),
    ({"temperature": 0.3}, "unknown argument 'temperature' .decoding is greedy: there are no sampling settings"),
    ({"mode": "full"}, "storage_dtype='float32' has no effect without mode: cachecraft or naive"),
])
def test_model_copy_refuses_what_construction_refuses(gen, update, said):
    with pytest.raises(ParamError, match=said):
        gen.model_copy(update=update)
    with pytest.raises(ParamError, match=said):  # the same refusal
        RagkitGenerator(**{**{name: getattr(gen, name) for name in gen.model_fields_set}, **update})


def test_model_copy_refuses_a_cache_dir_that_is_a_file(gen, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ParamError, match="RagkitGenerator.cache_dir: .*is a file"):
        gen.model_copy(update={"cache_dir": str(f)})


def test_model_copy_of_a_given_generator_shares_it(tiny):  # noqa: F811
    lg, other = LocalGenerator(tiny[0]), LocalGenerator(tiny[0])
    g = RagkitGenerator(generator=lg, max_new_tokens=2)
    assert g.model_copy().local_generator is lg
    assert g.model_copy(update={"max_new_tokens": 3}).local_generator is lg
    deep = g.model_copy(deep=True).local_generator
    assert deep is not lg and deep.model_name == lg.model_name
    assert g.model_copy(update={"generator": other}).local_generator is other
    built = g.model_copy(update={"generator": None, "model": tiny[0]}).local_generator
    assert built not in (lg, other) and built.model_name == tiny[0]
    with pytest.raises(ParamError, match="expected a ragkit LocalGenerator"):
        g.model_copy(update={"generator": "smollm2"})
    # a generator given in place of the one built: the original's model setting is not kept beside it
    assert RagkitGenerator(model=tiny[0]).model_copy(update={"generator": lg}).local_generator is lg
    assert copy.copy(g).local_generator is lg and copy.deepcopy(g).local_generator is not lg


@pytest.mark.parametrize("kwargs, said", [
    ({"max_new_tokens": True}, "RagkitGenerator.max_new_tokens: expected an integer, got True; a boolean"),
    ({"max_chunk_tokens": False}, "RagkitGenerator.max_chunk_tokens: expected an integer, got False"),
    ({"fraction": True}, "RagkitGenerator.fraction: expected a number, got True"),
    ({"cache_budget_mb": True}, "RagkitGenerator.cache_budget_mb: expected a number, got True"),
    ({"max_new_tokens": 2.5}, "RagkitGenerator.max_new_tokens: expected an integer, got 2.5"),
])
def test_settings_are_checked_as_the_generate_step_checks_them(tiny, kwargs, said):  # noqa: F811
    from ragkit.generators import Generate

    with pytest.raises(ParamError, match=said.replace("RagkitGenerator", "generate")):
        Generate(**kwargs)
    with pytest.raises(ParamError, match=said):
        RagkitGenerator(model=tiny[0], **kwargs)


def test_configurable_fields_check_the_value_at_the_call(gen):
    cf = gen.configurable_fields(max_new_tokens=ConfigurableField(id="mnt"))
    for bad, said in ((True, "expected an integer, got True"), (0, "expected a positive integer, got 0")):
        with pytest.raises(ParamError, match=f"RagkitGenerator.max_new_tokens: {said}"):
            cf.with_config(configurable={"mnt": bad}).invoke(X)  # refused before the model loads


def test_configurable_fields_of_a_given_generator_share_it(tiny):  # noqa: F811
    lg = LocalGenerator(tiny[0], storage_dtype="float32")
    g = RagkitGenerator(generator=lg, max_new_tokens=2)
    cf = g.configurable_fields(max_new_tokens=ConfigurableField(id="mnt"))
    answer = cf.with_config(configurable={"mnt": 3}).invoke(X)
    assert isinstance(answer, str)
    assert lg.chunk_cache is not None and lg.chunk_cache.stats.misses == 1  # its chunk cache served the copy


def test_an_engine_setting_beside_a_generator_is_still_refused(tiny):  # noqa: F811
    with pytest.raises(ParamError, match="generator given with max_chunk_tokens"):
        RagkitGenerator(generator=LocalGenerator(tiny[0]), max_chunk_tokens=50)


@pytest.mark.parametrize("key", ["temperature", "top_p", "do_sample"])
def test_sampling_settings_say_decoding_is_greedy(tiny, key):  # noqa: F811
    with pytest.raises(ParamError, match=f"unknown argument '{key}' .decoding is greedy: there are no sampling "
                                         "settings.; expected") as e:
        RagkitGenerator(model=tiny[0], **{key: 0.5})
    assert "did you mean" not in str(e.value)
    with pytest.raises(ParamError, match="'top_k' .every document given is a chunk: set the retriever's k; "
                                         "decoding is greedy"):
        RagkitGenerator(model=tiny[0], top_k=3)


def test_far_spellings_get_no_suggestion(tiny):  # noqa: F811
    with pytest.raises(ParamError) as e:
        RagkitGenerator(model=tiny[0], model_kwargs={})
    assert "did you mean" not in str(e.value)
    with pytest.raises(ParamError) as e:
        RagkitRetriever(pipeline="bm25", corpus=["a b"], model_kwargs={})
    assert "did you mean" not in str(e.value)  # (search_kwargs was offered)
    with pytest.raises(ParamError, match=r"'selecter' \(did you mean selector\?\)"):
        RagkitGenerator(model=tiny[0], selecter="fixed")
