"""Filters on numpy date / duration columns: a value that can match no document is refused with why."""
from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest

from ragkit import Corpus
from ragkit.errors import DataError


def _corpus() -> Corpus:
    return Corpus(ids=["a", "b"], texts=["x", "y"],
                  metadata={"ns": np.array(["2020-01-01", "2021-01-01"], dtype="datetime64[ns]"),
                            "day": np.array(["2020-01-01", "NaT"], dtype="datetime64[D]"),
                            "dur": np.array([1, 2], dtype="timedelta64[s]")})


@pytest.mark.parametrize("given", [datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
                                   pd.Timestamp("2020-01-01", tz="UTC")])
def test_a_date_with_a_time_zone_on_a_nanosecond_column_is_named_as_such(given) -> None:
    # (it was "the field holds int values ... == 1577836800000000000 is false": the codes' ints, not the dates)
    with pytest.raises(DataError, match=r"filter.ns: the field holds dates \(datetime64\[ns\]\); got .*, which has "
                                        r"a time zone; a numpy date has none"):
        _corpus().mask({"ns": given})
    with pytest.raises(DataError, match=r"filter.day: .*has a time zone"):
        _corpus().check_filter_kinds({"day": given})


def test_a_string_on_a_date_column_says_what_to_give() -> None:
    with pytest.raises(DataError, match=r"filter.ns: the field holds dates \(datetime64\[ns\]\); got '2020-01-01' "
                                        r"\(str\), which is not one, so it would match no document; give one as "
                                        r"np.datetime64"):
        _corpus().mask({"ns": "2020-01-01"})
    with pytest.raises(DataError, match=r"filter.dur: the field holds durations \(timedelta64\[s\]\); got 2 \(int\)"):
        _corpus().mask({"dur": 2})


def test_a_finer_date_than_the_column_is_refused_but_one_exact_value_among_several_is_enough() -> None:
    c = _corpus()
    with pytest.raises(DataError, match=r"filter.day: .*is not a whole datetime64\[D\] value \(the field counts in "
                                        r"'D'\)"):
        c.mask({"day": datetime.datetime(2020, 1, 1, 12)})
    # as for other kinds, a list is refused only where none of its values could match
    assert c.mask({"day": [datetime.datetime(2020, 1, 1, 12), datetime.date(2020, 1, 1)]}).tolist() == [True, False]
    assert c.mask({"day": [None, np.datetime64("2020-01-01")]}).tolist() == [True, True]
    assert c.mask({"ns": datetime.datetime(2021, 1, 1)}).tolist() == [False, True]
    assert c.mask({"dur": datetime.timedelta(seconds=2)}).tolist() == [False, True]
