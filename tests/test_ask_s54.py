"""``ragkit ask --top-k`` / ``--max-new-tokens`` beyond 2,147,483,647 are refused by the flag, naming it (they reached
Generate and failed as "generate.top_k: expected an integer within ..."); --help states the range."""
from __future__ import annotations

import pytest
from conftest import cli as _cli


@pytest.mark.parametrize("flag", ["--top-k", "--max-new-tokens"])
def test_ask_count_flags_beyond_max_int_are_refused_by_name(flag: str) -> None:
    res = _cli("ask", "--data", "nowhere", flag, 3_000_000_000, "vitamin")
    assert res.exit_code == 2, res.output
    assert f"Invalid value for '{flag}': expected an integer from 1 to 2,147,483,647, got '3000000000'" in res.output
    assert "generate." not in res.output
    assert "[an integer from 1 to 2,147,483,647]" in " ".join(_cli("ask", "--help").output.split())
