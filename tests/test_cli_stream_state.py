"""Each command of the app starts with no failed standard stream on record: a program (or a test) that runs the app
twice in one process had the first command's closed pipe carried into the second, whose ``--run -`` then wrote the
locale's bytes (0xe9 for e-acute, which ``Run.read_trec`` refuses) instead of UTF-8 (test_cli_pipes.py before
test_unicode_review.py's ``test_run_dash_writes_utf8_whatever_stdout_encoding`` failed)."""

from __future__ import annotations

import json

from ragkit import Corpus, Run
from ragkit.cli import _streams
from ragkit.retrievers import BM25


def test_a_command_does_not_inherit_an_earlier_commands_broken_stdout(tmp_path):
    from typer.testing import CliRunner

    from ragkit.cli import app

    BM25().fit(Corpus(ids=["caf\xe9", "b"], texts=["caf\xe9 au lait", "tea"])).save(tmp_path / "idx")
    (tmp_path / "q.jsonl").write_text(json.dumps({"_id": "q\xe9", "text": "caf\xe9"}) + "\n", encoding="utf-8")
    _streams._stream_errors["stdout"] = BrokenPipeError(32, "Broken pipe")  # (an earlier command's, left behind)
    res = CliRunner(charset="latin-1").invoke(app, ["search", "--index", str(tmp_path / "idx"), "--queries",
                                                    str(tmp_path / "q.jsonl"), "--run", "-"])
    assert res.exit_code == 0, (res.output, res.exception)
    (tmp_path / "out.trec").write_bytes(res.stdout_bytes)
    assert Run.read_trec(tmp_path / "out.trec").query_ids == ["q\xe9"]
