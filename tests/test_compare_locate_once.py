"""``ragkit compare --data D -o out.json`` locates the dataset once (a name looked up in the places datasets are kept,
the folder listed for the datasets it may hold): its judgements are read from the folder found, and the JSON records
that folder (``data_resolved``); it located it a second time for the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

QUERIES = [f"q{i}" for i in range(6)]


def _dataset(root: Path) -> Path:
    from ragkit.eval import write_beir
    from ragkit.types import Corpus

    ids = [f"d{i}" for i in range(12)]
    qrels = {q: {f"d{i}": 1} for i, q in enumerate(QUERIES)}
    return write_beir(root / "tiny", Corpus(ids=ids, texts=[f"text {i}" for i in range(12)]),
                      {q: f"query {q}" for q in QUERIES}, {"test": qrels})


def _trec(path: Path, hit_every: int) -> Path:
    lines = []
    for i, q in enumerate(QUERIES):
        docs = [f"d{i}", "d11"] if i % hit_every == 0 else ["d11", f"d{i}"]
        lines += [f"{q} Q0 {d} {r + 1} {10 - r} run" for r, d in enumerate(docs)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("by", ["folder", "name"])
def test_compare_locates_the_dataset_once(tmp_path: Path, monkeypatch, by: str):
    from typer.testing import CliRunner

    from ragkit.cli import app
    from ragkit.eval import beir

    data = _dataset(tmp_path / "beir")
    a, b = _trec(tmp_path / "a.trec", 1), _trec(tmp_path / "b.trec", 2)
    monkeypatch.setenv("RAGKIT_BEIR_DIR", str(tmp_path / "beir"))  # (where the name is found)
    located: list[object] = []
    listed: list[Path] = []
    locate, subsets = beir._locate, beir._subsets

    def counted_locate(name_or_path, **kw):
        located.append(name_or_path)
        return locate(name_or_path, **kw)

    def counted_subsets(folder):
        if Path(folder).resolve() == data.resolve():
            listed.append(folder)
        return subsets(folder)

    monkeypatch.setattr(beir, "_locate", counted_locate)
    monkeypatch.setattr(beir, "_subsets", counted_subsets)
    given = str(data) if by == "folder" else "tiny"
    out = tmp_path / "cmp.json"
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--data", given, "--resamples", "100", "-o", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert located == [given], f"--data {given} located {len(located)} times: {located}"
    assert len(listed) == 1, f"the dataset's folder listed {len(listed)} times"
    d = json.loads(out.read_text())
    assert (d["data"], d["data_resolved"], d["dataset"]) == (given, str(data.resolve()), "tiny")
    assert [s["name"] for s in d["systems"]] == ["a", "b"]
