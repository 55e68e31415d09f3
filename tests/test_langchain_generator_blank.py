"""RagkitGenerator refuses a blank question before the model runs, as ``ragkit ask "   "`` does.

Was: ``invoke({"question": "   ", "documents": texts})`` ran the model on a whitespace-only question and answered
something (and ``{"question": "", "documents": []}`` answered ''), where ``ragkit ask`` says "expected a question,
got an empty one" and the README says bad inputs to RagkitGenerator are refused before the model runs.
"""

from __future__ import annotations

import asyncio

import pytest

from ragkit.errors import ParamError
from ragkit.integrations.langchain import RagkitGenerator

TEXTS = ["Scurvy is caused by a lack of vitamin C.", "Paris is the capital of France."]


@pytest.fixture
def gen(monkeypatch):
    """A generator whose model must not be reached: loading it fails the test."""

    def no_model(self):  # noqa: ANN001, ANN202
        raise AssertionError("the model was run on a blank question")

    monkeypatch.setattr(RagkitGenerator, "_engine", no_model)
    return RagkitGenerator(max_new_tokens=4)


@pytest.mark.parametrize("question", ["", "   ", "\n\t ", "\u3000"])
def test_a_blank_question_is_refused_before_the_model_runs(gen, question):
    for docs in (TEXTS, []):
        x = {"question": question, "documents": docs}
        with pytest.raises(ParamError, match="'question' is str .*; expected a question, got an empty one") as e:
            gen.invoke(x)
        assert e.value.path == "question" and str(e.value).startswith("RagkitGenerator: ")
        with pytest.raises(ParamError, match="expected a question, got an empty one"):
            gen.batch([{"question": "What causes scurvy?", "documents": []}, x])
        with pytest.raises(ParamError, match="expected a question, got an empty one"):
            list(gen.stream(x))
        with pytest.raises(ParamError, match="expected a question, got an empty one"):
            asyncio.run(gen.ainvoke(x))


def test_a_real_question_without_documents_still_answers_empty(gen):
    """Not over-refused: a question with no documents answers '' without the model, as before."""
    assert gen.invoke({"question": "What causes scurvy?", "documents": []}) == ""
