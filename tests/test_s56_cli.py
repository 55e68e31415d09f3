"""Command-line fixes of session 56: ``train --seed`` with no report, ``--k`` items, ``--data`` suggestions,
``validate`` without torch, ``ask --cache-dir`` as a path."""

from __future__ import annotations

from pathlib import Path

from conftest import cli, tiny_beir


# ------------------------------------------------------------------ 1. train --seed with no held-out report
def test_train_refuses_seed_with_no_report(tmp_path: Path) -> None:
    """``--seed`` draws only the held-out report's fold: with --no-report it was silently ignored."""
    data = tiny_beir(tmp_path / "tiny")
    res = cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "out", "--seed", "5", "--no-report")
    assert res.exit_code == 2, res.output
    assert "--seed 5" in res.output and "would be ignored" in res.output
    assert not (tmp_path / "out").exists()  # refused before anything is fitted or saved


def test_train_notes_an_unused_seed_when_the_report_is_skipped(tmp_path: Path) -> None:
    """A pipeline that learns nothing skips the report by itself: --seed is then noted as unused."""
    data = tiny_beir(tmp_path / "tiny")
    res = cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "out", "--seed", "5")
    assert res.exit_code == 0, res.output
    assert "--seed 5 is not used" in res.output
    res = cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "out2")
    assert res.exit_code == 0, res.output
    assert "--seed" not in res.output


# ------------------------------------------------------------------ 2. eval --k: empty and repeated items
def test_eval_k_refuses_empty_and_repeated_items(tmp_path: Path) -> None:
    """``--k 10,,100`` and ``--k 10,10`` were taken silently (the empty item dropped, the repeat kept once),
    where --data refuses an empty or repeated item: refused now, as a usage error (exit status 2)."""
    data = tiny_beir(tmp_path / "tiny")
    for k, said in (("10,,100", "an empty item"), ("10,", "an empty item"), ("10,10", "the cut-off 10 is listed twice"),
                    ("10,010", "'10' and '010' are both the cut-off 10")):
        res = cli("eval", "--data", data, "-p", "bm25", "--k", k)
        assert res.exit_code == 2, (k, res.output)
        assert said in res.output and "--k" in res.output, (k, res.output)
    res = cli("eval", "--data", data, "-p", "bm25", "--k", " 5 , 10")
    assert res.exit_code == 0, res.output
    assert "ndcg@5" in res.output and "ndcg@10" in res.output


def test_metrics_refuse_an_empty_item(tmp_path: Path) -> None:
    """``-m ndcg@10,,recall@10`` was taken as two metrics (the empty item dropped), where --k and --data refuse
    an empty item: refused now, naming --metrics, for eval and compare alike (one parser)."""
    data = tiny_beir(tmp_path / "tiny")
    for m in ("ndcg@10,,recall@10", "ndcg@10,", ",ndcg@10"):
        res = cli("eval", "--data", data, "-p", "bm25", "-m", m)
        assert res.exit_code == 2, (m, res.output)
        assert "--metrics" in res.output and "an empty item" in res.output, (m, res.output)
    res = cli("eval", "--data", data, "-p", "bm25", "-m", " ndcg@10 , recall@10")
    assert res.exit_code == 0, res.output


# ------------------------------------------------------------------ 4. --data: a missing folder, a mistyped name
def test_missing_folder_lists_the_folders_here_not_sub_datasets(tmp_path: Path, monkeypatch) -> None:
    """``./d9`` beside BEIR folders d1, d2 said '. holds the sub-datasets d1, d2', as if the working folder were
    an archive (cqadupstack); the folders there are listed as such now, with the closest one."""
    import pytest

    from ragkit import load_beir
    from ragkit.errors import DataError

    for name in ("sf_one", "sf_two"):
        tiny_beir(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    res = cli("eval", "--data", "./sf_onx", "-p", "bm25")
    assert res.exit_code == 2, res.output
    said = " ".join(res.output.split())
    assert "./sf_onx: BEIR folder not found; BEIR folders here: sf_one, sf_two; did you mean 'sf_one'?" in said, said
    assert "sub-datasets" not in said
    with pytest.raises(DataError, match=r"^other/sf_onx: BEIR folder not found; BEIR folders in other: sf_one, sf_two; "
                                        r"did you mean 'other/sf_one'\?$"):
        (tmp_path / "other").mkdir()
        for name in ("sf_one", "sf_two"):
            tiny_beir(tmp_path / "other" / name)
        load_beir("other/sf_onx")
    for name in ("android", "gaming"):  # a BEIR archive (by its name): its sub-datasets, as before
        tiny_beir(tmp_path / "cqadupstack" / name)
    with pytest.raises(DataError, match=r"^cqadupstack/androi: BEIR folder not found; cqadupstack holds the "
                                        r"sub-datasets android, gaming; did you mean 'cqadupstack/android'\?$"):
        load_beir("cqadupstack/androi")


def test_a_failed_download_of_a_mistyped_name_suggests_the_beir_name(tmp_path: Path, monkeypatch) -> None:
    """``--data scifcat`` where the download fails for another reason than a missing archive (no network) said
    only the failure; the BEIR name it is close to is suggested now (a custom server may host other names, so
    the download is still tried)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAGKIT_BEIR_URL", "http://127.0.0.1:9/")  # (the discard port: connection refused)
    res = cli("eval", "--data", "scifcat", "-p", "bm25")
    assert res.exit_code == 1, res.output
    said = " ".join(res.output.split())
    assert "could not download" in said and said.endswith("did you mean the BEIR dataset 'scifact'?"), said
    res = cli("eval", "--data", "zzqqxx", "-p", "bm25")  # (close to no BEIR name: no suggestion)
    assert res.exit_code == 1 and "did you mean" not in res.output, res.output


# ------------------------------------------------------------------ 5. validate: a saved dense folder without torch
_VALIDATE_SCRIPT = """
import sys
from ragkit.cli import app
try:
    app(sys.argv[1:], prog_name="ragkit")
except SystemExit as e:
    code = e.code
print("exit", code, "torch", "torch" in sys.modules)
"""


def test_validate_of_a_saved_dense_pipeline_does_not_import_torch(tmp_path: Path) -> None:
    """``ragkit validate`` checks a saved folder without searching it, yet a dense step's load imported PyTorch
    (warm_torch: ~2 s, there so that the first search does not pay it); it does not now, and a plain load
    still does."""
    import subprocess
    import sys

    from ragkit.encoders import HashingEncoder, register_encoder
    from ragkit.eval.beir import load_beir
    from ragkit.pipelines import Pipeline

    plugin = tmp_path / "hashenc.py"
    plugin.write_text("from ragkit.encoders import HashingEncoder, register_encoder\n"
                      "register_encoder('s56-hash16', HashingEncoder(dim=16), replace=True)\n", encoding="utf-8")
    register_encoder("s56-hash16", HashingEncoder(dim=16), replace=True)
    ds = load_beir(tiny_beir(tmp_path / "tiny"))
    pipe = Pipeline.from_yaml("pipeline:\n  - dense: {model: s56-hash16, k: 3}\n")
    pipe.fit(ds.corpus)
    pipe.save(tmp_path / "saved")
    script = tmp_path / "run.py"
    script.write_text(_VALIDATE_SCRIPT, encoding="utf-8")
    out = subprocess.run([sys.executable, str(script), "--import", str(plugin), "validate", str(tmp_path / "saved")],
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().endswith("exit 0 torch False"), out.stdout + out.stderr
    assert "ok " in out.stdout and "Dense(" in out.stdout
    loads = ("from ragkit.pipelines import Pipeline\nPipeline.load(sys.argv[1])\n"
             "print('torch', 'torch' in sys.modules)\n")  # (a load a search follows: PyTorch imported at the load)
    out = subprocess.run([sys.executable, "-c", f"import sys, runpy\nrunpy.run_path({str(plugin)!r})\n{loads}",
                          str(tmp_path / "saved")], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "torch True", out.stdout + out.stderr


# ------------------------------------------------------------------ 6. ask --cache-dir: a path option
def test_ask_cache_dir_is_a_path_option() -> None:
    """``ask --cache-dir`` was typed ``str`` (its help read ``<str>``) where every other path option is a path;
    an empty one is still refused as one (it would be the current folder)."""
    from ragkit.cli._ask import ask_cmd

    res = cli("ask", "--help")
    assert res.exit_code == 0, res.output
    assert "--cache-dir <path>" in res.output and "--cache-dir <str>" not in res.output, res.output
    res = cli("ask", "q", "-p", "bm25", "--cache-dir", "")
    assert res.exit_code == 2 and "an empty path" in res.output, res.output
    import inspect

    assert "Path" in str(inspect.signature(ask_cmd).parameters["cache_dir"].annotation)
