"""``ragkit eval -o`` records what reproduces a result (the resolved pipeline, library versions and ragkit's
commit, encoder model identities, corpus and queries fingerprints), and ``ragkit compare`` warns of results
of different corpora and reports the means ``ragkit eval`` wrote, to the last digit (reproduction review)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragkit.eval import provenance
from ragkit.eval.compare import SystemResult, compare, load_result

QUERIES = [f"q{i}" for i in range(300)]


def _cli(*args: object):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def two_corpora(slice_data, tmp_path_factory):
    """The slice as a BEIR folder, and a copy holding only its first 150 documents and the judged ones (the same
    queries and qrels: "the same dataset" over half of its corpus)."""
    from ragkit.eval import write_beir

    corpus, test_q, test_qrels, _ = slice_data
    root = tmp_path_factory.mktemp("prov")
    full = write_beir(root / "full" / "scifact", corpus, test_q, {"test": test_qrels})
    judged = {d for rel in test_qrels.values() for d in rel}
    keep = np.array([i for i, d in enumerate(corpus.ids) if i < 150 or d in judged])
    half = write_beir(root / "half" / "scifact", corpus.subset(keep), test_q, {"test": test_qrels})
    return full, half, root


@pytest.fixture(scope="module")
def evaluated(two_corpora):
    """``ragkit eval -o`` of a BM25 pipeline (k1 given, every other parameter left at its default) on both."""
    full, half, root = two_corpora
    spec = root / "bm25.yaml"
    spec.write_text("pipeline:\n  - bm25: {k1: 1.2}\n")
    out = {}
    for name, data in (("full", full), ("half", half)):
        out[name] = root / f"{name}.json"
        res = _cli("eval", "--data", data, "--pipeline", spec, "-o", out[name])
        assert res.exit_code == 0, res.output
    return out


# --- 1. the resolved pipeline


def test_eval_json_records_every_parameter_of_the_pipeline(evaluated):
    """Review: the JSON held the pipeline as its YAML only (``bm25: {}``): k1, b, tokenizer, fields left at their
    defaults were implicit, so a ragkit with other defaults reproduced something else."""
    from ragkit.retrievers import BM25

    payload = json.loads(evaluated["full"].read_text())
    assert "k1: 1.2" in payload["pipeline"] and "tokenizer" not in payload["pipeline"]  # (the YAML: as given)
    want = BM25(k1=1.2).params.model_dump(mode="json")
    assert payload["pipeline_resolved"] == [{"bm25": want}]
    assert {"k1", "b", "tokenizer", "fields", "stemmer", "k"} <= set(want)


def test_resolved_pipeline_keeps_the_shape_of_the_yaml_with_every_default():
    from ragkit.pipelines import Pipeline
    from ragkit.pipelines.yaml import to_node

    pipe = Pipeline.from_yaml("pipeline:\n  - parallel:\n      branches: [[bm25: {}], [bm25: {k1: 2.0}]]\n"
                              "  - top_k: {k: 10}\n")
    tree = provenance.resolved_pipeline(pipe)
    assert list(tree[0]) == list(to_node(pipe)[0]) == ["parallel"]  # the nesting of to_dict
    par = tree[0]["parallel"]
    assert [b[0]["bm25"]["k1"] for b in par["branches"]] == [0.9, 2.0]
    assert par["fuse"] == {"rrf": pipe.steps[0].fuse.params.model_dump(mode="json")}  # implicit in the YAML
    assert par["names"] == list(pipe.steps[0].names)
    assert tree[1] == {"top_k": pipe.steps[1].params.model_dump(mode="json")}
    json.dumps(tree)  # JSON-ready


# --- 2. versions and commit


def test_eval_json_records_library_versions_and_ragkit_commit(evaluated):
    payload = json.loads(evaluated["full"].read_text())
    v = payload["versions"]
    assert v["ragkit"] == payload["settings"]["ragkit_version"]
    for lib in ("numpy", "scipy", "pydantic", "usearch"):
        assert v[lib] == importlib.metadata.version(lib)
    assert v["python"] == sys.version.split()[0]
    repo = Path(provenance.__file__).resolve().parents[2]
    if (repo / ".git").exists():  # run from this checkout
        assert v["ragkit_commit"].split("+")[0] == provenance.ragkit_commit(repo).split("+")[0]


def test_versions_import_no_library():
    """Versions come from package metadata: torch is not imported for them (seconds, and memory)."""
    code = ("import sys, json; from ragkit.eval import provenance as p; before = 'torch' in sys.modules; "
            "v = p.versions(); print(json.dumps([before, 'torch' in sys.modules, v]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    before, after, v = json.loads(out.stdout.strip().splitlines()[-1])
    assert not before and not after
    try:
        assert v["torch"] == importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        assert "torch" not in v  # (absent ones are left out)
    assert "not-a-library" not in provenance.versions(("numpy", "not-a-library"))


def test_ragkit_commit_reads_head_refs_packed_refs_and_worktrees(tmp_path: Path, monkeypatch):
    sha, other = "a" * 40, "b" * 40
    _fake_git(tmp_path, monkeypatch, "exit 0")  # (git status: nothing changed; these folders hold no repository)
    assert provenance.ragkit_commit(tmp_path) is None  # no checkout: an installed ragkit
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{other} refs/heads/dev\n{sha} refs/heads/main\n")
    assert provenance.ragkit_commit(tmp_path / "repo") == sha
    (git / "refs" / "heads" / "main").write_text(other + "\n")  # a loose ref wins over the packed one
    assert provenance.ragkit_commit(tmp_path / "repo") == other
    (git / "HEAD").write_text(sha + "\n")  # detached
    assert provenance.ragkit_commit(tmp_path / "repo") == sha
    wt = tmp_path / "wt"
    (git / "worktrees" / "wt").mkdir(parents=True)
    (git / "worktrees" / "wt" / "HEAD").write_text("ref: refs/heads/dev\n")
    (git / "worktrees" / "wt" / "commondir").write_text("../..\n")
    wt.mkdir()
    (wt / ".git").write_text(f"gitdir: {git / 'worktrees' / 'wt'}\n")
    assert provenance.ragkit_commit(wt) == other
    (git / "HEAD").write_text("garbage\n")
    assert provenance.ragkit_commit(tmp_path / "repo") is None


# --- 3. model identity


def test_models_record_the_embedding_cache_identity():
    """The identity the embedding cache keys vectors by (model_fingerprint of the resolved model), read from
    the encoder the fit made: no other hash of the model."""
    from ragkit.encoders import get_encoder
    from ragkit.encoders.sentence import model_fingerprint, resolve_model
    from ragkit.pipelines import Pipeline

    pipe = Pipeline.from_yaml("pipeline:\n  - bm25: {}\n  - mmr: {}\n")  # a filter with a model, beside bm25
    enc = get_encoder("all-MiniLM-L6-v2")  # (made as a fit makes it: fingerprints the folder, loads nothing)
    [rec] = provenance.models(pipe)
    assert rec["step"].endswith("mmr") and rec["model"] == "all-MiniLM-L6-v2"
    assert rec["path"] == resolve_model("all-MiniLM-L6-v2")
    assert rec["fingerprint"] == model_fingerprint(rec["path"]) == enc.key.split("|")[0]
    assert rec["fingerprint"].startswith("st-")


def test_models_record_a_registered_encoders_key():
    from ragkit.encoders import HashingEncoder, register_encoder, unregister_encoder
    from ragkit.pipelines import Pipeline

    enc = HashingEncoder(dim=8)
    register_encoder("prov-hash-8", enc, replace=True)
    try:
        pipe = Pipeline.from_yaml("pipeline:\n  - dense: {model: prov-hash-8}\n")
        assert provenance.models(pipe) == [{"step": "pipeline[0].dense", "model": "prov-hash-8", "path": "prov-hash-8",
                                            "fingerprint": enc.key, "registered": True}]
    finally:
        unregister_encoder("prov-hash-8")


def test_eval_json_lists_the_models(evaluated):
    assert json.loads(evaluated["full"].read_text())["models"] == []  # BM25 uses none


# --- 4. corpus and queries fingerprints


def test_eval_json_fingerprints_the_corpus_and_the_queries(evaluated, two_corpora):
    from ragkit import load_beir

    full, half, _ = two_corpora
    for name, data in (("full", full), ("half", half)):
        settings = json.loads(evaluated[name].read_text())["settings"]
        ds = load_beir(data)
        assert settings["corpus_fingerprint"] == provenance.corpus_digest_text(ds.corpus)
        assert settings["n_documents"] == len(ds.corpus)
        assert settings["queries_fingerprint"] == provenance.queries_fingerprint(ds.queries("test"))
    a, b = (json.loads(evaluated[n].read_text())["settings"] for n in ("full", "half"))
    assert a["corpus_fingerprint"] != b["corpus_fingerprint"] and a["queries_fingerprint"] == b["queries_fingerprint"]


def test_corpus_fingerprint_sees_ids_titles_and_texts():
    from ragkit.types import Corpus, Queries

    def fp(ids, texts, titles=None):  # noqa: ANN001, ANN202
        return provenance.corpus_digest_text(Corpus(ids=ids, texts=texts, titles=titles))

    base = fp(["a", "b"], ["x y", "z"], ["t", ""])
    assert base.startswith("blake2b:") and base == fp(["a", "b"], ["x y", "z"], ["t", ""])
    assert len({base, fp(["a", "c"], ["x y", "z"], ["t", ""]), fp(["a", "b"], ["x", "y z"], ["t", ""]),
                fp(["a", "b"], ["x y", "z"], ["", "t"]), fp(["b", "a"], ["z", "x y"], ["", "t"])}) == 5
    q = provenance.queries_fingerprint(Queries(["1", "2"], ["ab", "c"]))
    assert q != provenance.queries_fingerprint(Queries(["1", "2"], ["a", "bc"]))
    assert q != provenance.queries_fingerprint(Queries(["1", "3"], ["ab", "c"]))


# --- 5. compare warns of results of different corpora


def test_compare_warns_of_results_over_different_corpora(evaluated, tmp_path: Path):
    """Review: BM25 over all of SciFact against BM25 over half of it (same qrels) compared without a word."""
    res = _cli("compare", evaluated["full"], evaluated["half"], "--resamples", "200", "-o", tmp_path / "cmp.json")
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "warning: the results were evaluated on different corpora" in flat
    assert str(evaluated["full"]) in flat and str(evaluated["half"]) in flat
    written = json.loads((tmp_path / "cmp.json").read_text())
    assert any("different corpora" in w for w in written["warnings"])
    assert [s["corpus_fingerprint"] for s in written["systems"]] == [
        json.loads(evaluated[n].read_text())["settings"]["corpus_fingerprint"] for n in ("full", "half")]
    same = tmp_path / "again.json"
    shutil.copy(evaluated["full"], same)
    res = _cli("compare", evaluated["full"], same, "--resamples", "200")
    assert res.exit_code == 0 and "different corpora" not in res.output


def test_compare_says_nothing_of_corpora_for_files_without_the_fingerprint(evaluated, tmp_path: Path):
    """Files of an older ragkit (no corpus_fingerprint) are read as before: no warning."""
    old = []
    for name in ("full", "half"):
        payload = json.loads(evaluated[name].read_text())
        for key in ("pipeline_resolved", "models", "versions"):
            del payload[key]
        for key in ("corpus_fingerprint", "n_documents", "queries_fingerprint"):
            del payload["settings"][key]
        old.append(tmp_path / f"old_{name}.json")
        old[-1].write_text(json.dumps(payload))
    res = _cli("compare", *old, "--resamples", "200")
    assert res.exit_code == 0, res.output
    assert "different corpora" not in res.output
    assert load_result(old[0]).corpus_fingerprint is None
    mixed = _cli("compare", old[0], evaluated["half"], "--resamples", "200")  # one known: nothing to compare with
    assert mixed.exit_code == 0 and "different corpora" not in mixed.output


def test_compare_refuses_a_corpus_fingerprint_that_is_no_string(tmp_path: Path):
    from ragkit.errors import DataError

    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"per_query": {"ndcg@10": {"q": 0.5}}, "settings": {"corpus_fingerprint": 3}}))
    with pytest.raises(DataError, match=r"bad.json: settings.corpus_fingerprint must be a string.*got 3"):
        load_result(path)


# --- 6. compare's means are ragkit eval's, to the last digit


def test_compare_means_equal_the_eval_json_exactly(evaluated, tmp_path: Path):
    """Review: compare's BM25 nDCG@10 0.6765784140342042 against 0.6765784140342034 in the eval JSON."""
    out = tmp_path / "cmp.json"
    res = _cli("compare", evaluated["full"], evaluated["half"], "-m", "ndcg@10,recall@100,map@100",
               "--resamples", "200", "-o", out)
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["rows"]
    for name in ("full", "half"):
        metrics = json.loads(evaluated[name].read_text())["metrics"]
        for r in rows:
            if r["system"] == name:
                assert r["mean"] == metrics[r["metric"]]


def test_compare_means_are_evaluates_mean():
    """np.mean of the values in their own order (pairwise summation), as evaluate computes its means; the
    weighted dot product compare used differed in the last digits."""
    rng = np.random.default_rng(3)
    values = [dict(zip(QUERIES, map(float, rng.uniform(0, 1, len(QUERIES))))) for _ in range(2)]
    values[1] = dict(reversed(list(values[1].items())))  # each system's own order
    cmp = compare([SystemResult("a", {"ndcg@10": values[0]}), SystemResult("b", {"ndcg@10": values[1]})],
                  ["ndcg@10"], n_resamples=10)
    for i in range(2):
        assert cmp.means[i, 0] == float(np.mean(list(values[i].values())))
    w = np.full(len(QUERIES), 1.0 / len(QUERIES))
    old = [np.fromiter(map(v.__getitem__, QUERIES), np.float64) @ w for v in values]
    assert any(o != cmp.means[i, 0] for i, o in enumerate(old))  # (the values the test reads differ by method)


def test_compare_means_of_several_datasets_are_ragkit_evals():
    """An archive's mean: the plain sum of each dataset's np.mean, in the datasets' order, over their number."""
    rng = np.random.default_rng(0)
    sizes = {"b": 37, "a": 101, "c": 263}
    per_set = {s: dict(zip((f"q{i}" for i in range(n)), map(float, rng.uniform(0, 1, n)))) for s, n in sizes.items()}
    per_query = {f"{s}/{q}": v for s, vals in per_set.items() for q, v in vals.items()}
    groups = {f"{s}/{q}": s for s, vals in per_set.items() for q in vals}
    r = SystemResult("x", {"ndcg@10": per_query}, groups=groups)
    cmp = compare([r, SystemResult("y", {"ndcg@10": dict(per_query)}, groups=groups)], ["ndcg@10"], n_resamples=10)
    want = sum(float(np.mean(list(v.values()))) for v in per_set.values()) / len(per_set)
    assert cmp.means[0, 0] == cmp.means[1, 0] == want
    weights = np.array([1.0 / (len(sizes) * sizes[groups[q]]) for q in per_query])
    assert np.fromiter(per_query.values(), np.float64) @ weights != want  # (the weighted sum differs here)


# --- several datasets


def test_eval_of_several_datasets_records_the_same_provenance(two_corpora, tmp_path: Path):
    from ragkit import load_beir

    full, half, _ = two_corpora
    other = tmp_path / "other"
    shutil.copytree(half, other)
    out = tmp_path / "both.json"
    res = _cli("eval", "--data", f"{full},{other}", "--pipeline", "bm25", "--limit", "5", "-o", out)
    assert res.exit_code == 0, res.output
    payload = json.loads(out.read_text())
    from ragkit.retrievers import BM25

    assert payload["pipeline_resolved"] == [{"bm25": BM25().params.model_dump(mode="json")}]
    assert payload["versions"]["numpy"] == importlib.metadata.version("numpy") and payload["models"] == []
    prints = {}
    for name, data in (("scifact", full), ("other", other)):
        ds = load_beir(data)
        sub = payload["subsets"][name]
        assert sub["corpus_fingerprint"] == provenance.corpus_digest_text(ds.corpus)
        assert sub["n_documents"] == len(ds.corpus)
        assert sub["queries_fingerprint"] == provenance.queries_fingerprint(ds.queries("test")[:5])
        prints[name] = sub["corpus_fingerprint"]
    settings = payload["settings"]
    assert settings["corpus_fingerprint"] == provenance.combined_fingerprint(prints)
    assert settings["n_documents"] == sum(payload["subsets"][s]["n_documents"] for s in prints)
    assert load_result(out).corpus_fingerprint == settings["corpus_fingerprint"]
    copy = shutil.copy(out, tmp_path / "copy.json")
    cmp = _cli("compare", out, copy, "-m", "ndcg@10", "--resamples", "100", "-o", tmp_path / "c.json")
    assert cmp.exit_code == 0, cmp.output
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert all(r["mean"] == payload["metrics"]["ndcg@10"] for r in rows)


# --- provenance only for the JSON; git status takes no lock and never claims a clean checkout it cannot see


_PROVENANCE_FUNCS = ("resolved_pipeline", "models", "versions", "ragkit_commit", "corpus_digest_text",
                     "queries_fingerprint")


def _count_provenance_calls(monkeypatch) -> dict[str, int]:  # noqa: ANN001
    """Wrap each of :mod:`ragkit.eval.provenance`'s recording functions to count its calls."""
    calls = dict.fromkeys(_PROVENANCE_FUNCS, 0)

    def counted(name: str, fn):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    for name in _PROVENANCE_FUNCS:
        monkeypatch.setattr(provenance, name, counted(name, getattr(provenance, name)))
    return calls


def test_eval_without_output_builds_no_provenance(two_corpora, tmp_path: Path, monkeypatch):
    """Review: ``ragkit eval`` without ``-o`` ran git status, read 23 packages' metadata and hashed the corpus
    (~0.5 s per million documents) for a JSON it never wrote, on one dataset and on several."""
    full, half, _ = two_corpora
    calls = _count_provenance_calls(monkeypatch)
    res = _cli("eval", "--data", full, "--pipeline", "bm25", "--limit", "5", "--run", tmp_path / "run.trec")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run.trec").stat().st_size > 0
    other = tmp_path / "other"
    shutil.copytree(half, other)
    res = _cli("eval", "--data", f"{full},{other}", "--pipeline", "bm25", "--limit", "5")
    assert res.exit_code == 0, res.output
    assert calls == dict.fromkeys(_PROVENANCE_FUNCS, 0)
    for args in (("--data", full), ("--data", f"{full},{other}")):  # -o: recorded (the counting sees the calls)
        calls.update(dict.fromkeys(_PROVENANCE_FUNCS, 0))
        res = _cli("eval", *args, "--pipeline", "bm25", "--limit", "5", "-o", tmp_path / "out.json")
        assert res.exit_code == 0, res.output
        assert calls["versions"] == 1 and calls["resolved_pipeline"] >= 1 and calls["corpus_digest_text"] >= 1
        assert "versions" in json.loads((tmp_path / "out.json").read_text())


def _fake_checkout(tmp_path: Path) -> tuple[Path, str]:
    """A folder whose ``.git`` names a commit (no repository behind it: only a fake git answers for it)."""
    sha = "c" * 40
    (tmp_path / "co" / ".git").mkdir(parents=True)
    (tmp_path / "co" / ".git" / "HEAD").write_text(sha + "\n")
    return tmp_path / "co", sha


def _fake_git(tmp_path: Path, monkeypatch, body: str) -> Path:  # noqa: ANN001
    """A ``git`` first on PATH running the shell ``body``; returns the file it may log to."""
    folder = tmp_path / "fakebin"
    folder.mkdir()
    log = tmp_path / "git.log"
    script = folder / "git"
    script.write_text(f"#!/bin/sh\nLOG={log}\n{body}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    return log


@pytest.mark.skipif(sys.platform == "win32", reason="a shell-script git")
def test_ragkit_commit_runs_git_status_without_optional_locks(tmp_path: Path, monkeypatch):
    """Review: git status took index.lock, so 19 of 150 ``git add`` run beside it in that repository failed."""
    checkout, sha = _fake_checkout(tmp_path)
    log = _fake_git(tmp_path, monkeypatch, 'echo "$GIT_OPTIONAL_LOCKS $*" >> "$LOG"\n[ -n "$DIRTY" ] && echo " M f"\n'
                                           "exit 0")
    assert provenance.ragkit_commit(checkout) == sha  # git answered: nothing changed
    monkeypatch.setenv("DIRTY", "1")
    assert provenance.ragkit_commit(checkout) == sha + "+modified"
    for line in log.read_text().splitlines():
        locks, *args = line.split()
        assert locks == "0" and args[0] == "--no-optional-locks" and ("status" in args or "ls-files" in args)


@pytest.mark.skipif(sys.platform == "win32", reason="a shell-script git")
@pytest.mark.parametrize("body", ["exit 0", 'echo "fatal: detected dubious ownership in repository" >&2\nexit 128',
                                  "exec sleep 30"], ids=["no-git", "refused", "timeout"])
def test_ragkit_commit_is_unknown_when_git_cannot_tell(tmp_path: Path, monkeypatch, body: str):
    """Review: git missing, timing out or refusing the folder (safe.directory) recorded the commit as clean."""
    checkout, sha = _fake_checkout(tmp_path)
    if body == "exit 0":  # no git at all
        (tmp_path / "empty").mkdir()
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    else:
        _fake_git(tmp_path, monkeypatch, body)
    monkeypatch.setattr(provenance, "_GIT_TIMEOUT", 0.3)
    assert provenance.ragkit_commit(checkout) == sha + "+unknown"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_ragkit_commit_leaves_the_index_alone_and_reads_its_own_checkout(tmp_path: Path, monkeypatch):
    """With a real git: the status neither rewrites the index (a refresh takes index.lock), nor reads the
    repository GIT_DIR / GIT_WORK_TREE name (a git hook's) instead of ragkit's checkout."""
    def git(repo: Path, *args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              capture_output=True, text=True, check=True, timeout=60).stdout.strip()

    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)
    repos = {}
    for name in ("clean", "dirty"):
        repo = repos[name] = tmp_path / name
        repo.mkdir()
        git(repo, "init", "-q")
        (repo / "f.txt").write_text("a\n")
        git(repo, "add", "f.txt")
        git(repo, "commit", "-qm", "one")
    sha = git(repos["clean"], "rev-parse", "HEAD")
    (repos["dirty"] / "f.txt").write_text("b\n")
    old = os.stat(repos["clean"] / "f.txt").st_mtime - 100  # the same text, other stat data: a refresh to write
    os.utime(repos["clean"] / "f.txt", (old, old))
    index = (repos["clean"] / ".git" / "index").read_bytes()
    monkeypatch.setenv("GIT_DIR", str(repos["dirty"] / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(repos["dirty"]))
    assert provenance.ragkit_commit(repos["clean"]) == sha
    assert (repos["clean"] / ".git" / "index").read_bytes() == index
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_WORK_TREE")
    assert provenance.ragkit_commit(repos["dirty"]) == git(repos["dirty"], "rev-parse", "HEAD") + "+modified"
