"""What a user's type checker says about code that extends and configures ragkit (``mypy --strict``).

The README's custom-operator pattern (``params: LengthPriorParams`` beside ``Params = LengthPriorParams``), a
parameter model built with some of its defaults (``BM25Params(k=3)``) and ``BM25.Params(k=4)`` must check clean;
a change in place of a frozen parameter, ``@register`` on a class that is no operator and a ``kind`` outside
:data:`ragkit.registry.KINDS` must each be flagged on their line.  Pyright (not installed in CI) was run on the same
file by hand.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from test_typing import ROOT, installed_layout

from ragkit.eval.beir import cache_dir

#: The lines after the README's block.  ``# error: CODE`` marks a line mypy must flag with that error code; every
#: other line (the README's block included) must check clean.
USER_CODE = '''

from typing_extensions import assert_type

from ragkit.retrievers.bm25 import BM25Params


op = BM25(k=3)
assert_type(op.params, BM25Params)
assert_type(op.params.k, int)
assert_type(BM25Params(k=3), BM25Params)
assert_type(BM25.Params(k=4), BM25Params)
assert_type(LengthPrior(weight=0.2).params.weight, float)
assert_type(LengthPrior.Params(weight=0.3), LengthPriorParams)
op.params = op.params.updated(k=7)
op.params.k = 7  # error: misc


@register
class NotAnOperator:  # error: type-var
    name = "not_an_operator"


class Misspelt(Operator):
    name = "misspelt"
    kind = "rerank"  # error: assignment
'''


def readme_operator_block() -> str:
    """The README's ```python block that defines ``LengthPrior`` (section "Writing an operator"), as written."""
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.M | re.S)
    found = [b for b in blocks if "class LengthPrior(Operator)" in b]
    assert len(found) == 1, f"{len(found)} README blocks define LengthPrior"
    return found[0]


@pytest.mark.slow  # mypy over ragkit's imports: about a minute on 2 cores with its cache empty
def test_mypy_strict_on_user_code(tmp_path):
    pytest.importorskip("mypy")
    installed_layout(tmp_path)
    code = readme_operator_block() + USER_CODE
    (tmp_path / "user_ops.py").write_text(code, encoding="utf-8")
    expected = {i: m.group(1) for i, line in enumerate(code.splitlines(), 1)
                if (m := re.search(r"# error: ([\w-]+)", line))}
    # --follow-imports=silent: ragkit is read as a user's checker reads an installed package, its own errors not
    # reported (tests/test_typing.py checks the package)
    cmd = [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--ignore-missing-imports",
           "--cache-dir", str(cache_dir() / "mypy-user"), "--no-error-summary", "--show-error-codes",
           "--python-version", "3.11", "user_ops.py"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "MYPY_FORCE_COLOR": "0"})
    report = proc.stdout + proc.stderr
    errors: dict[int, list[str]] = {}
    for m in re.finditer(r"^user_ops\.py:(\d+): error: .*\[([\w-]+)\]$", report, re.M):
        errors.setdefault(int(m.group(1)), []).append(m.group(2))
    lines = code.splitlines()
    unexpected = {n: (codes, lines[n - 1].strip()) for n, codes in errors.items() if expected.get(n) not in codes}
    missed = {n: (code, lines[n - 1].strip()) for n, code in expected.items() if code not in errors.get(n, [])}
    assert not unexpected and not missed, (f"mypy flagged lines it should accept: {unexpected}\nmypy accepted lines "
                                           f"it should flag: {missed}\n{report[-4000:]}")
    assert "Traceback" not in report and len(errors) == len(expected), report[-4000:]


def test_frozen_parameter_refused_with_how_to_change_it():
    """``op.params.k = 7`` (which type checkers flag) is a ParamError at run time, not pydantic's "Instance is
    frozen" ValidationError: it names the field and the public ways to change it, which work as it says."""
    from ragkit.errors import ParamError
    from ragkit.retrievers import BM25

    op = BM25(k=3)
    with pytest.raises(ParamError, match=r"BM25Params\.k: cannot set k=7 in place.*type\(op\)\(op\.params\."
                                         r"updated\(k=7\)\).*op\.params = op\.params\.updated\(k=7\)") as e:
        op.params.k = 7  # type: ignore[misc]
    assert e.value.path == "k" and op.params.k == 3
    with pytest.raises(ParamError, match=r"cannot set kk=7: parameters are frozen, and BM25Params has no "
                                         r"parameter 'kk' \(its parameters: k, variant"):
        op.params.kk = 7  # type: ignore[attr-defined]
    with pytest.raises(ParamError, match=r"BM25Params\.k: cannot delete k in place"):
        del op.params.k  # type: ignore[misc]
    assert type(op)(op.params.updated(k=7)) == BM25(k=7)  # the ways the message gives
    op.params = op.params.updated(k=7)
    assert op == BM25(k=7)
