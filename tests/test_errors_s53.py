"""DataError declares its ``path`` (a place in the options, as ParamError's), default ""."""

from __future__ import annotations

import pickle

from ragkit.errors import DataError


def test_a_data_error_has_a_path_attribute_that_defaults_to_empty():
    """Old code: DataError had no path; options.py set one with setattr and readers used getattr(e, "path", ...)."""
    assert DataError("bad corpus").path == ""
    e = DataError("search option bm25.filter.year: ...", path="options.bm25.filter")
    assert e.path == "options.bm25.filter" and str(e) == "search option bm25.filter.year: ..."
    back = pickle.loads(pickle.dumps(DataError("x")))
    assert str(back) == "x" and back.path == ""
