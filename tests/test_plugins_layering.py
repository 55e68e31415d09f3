"""The plugin imports a Ray worker runs (:mod:`ragkit._plugins`) are core code: neither ``import ragkit.scale`` nor a
worker's import of the driver's operator module loads typer or the command line (``ragkit.cli``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_scale_and_a_workers_plugin_import_load_no_cli(tmp_path):
    (tmp_path / "lyrops.py").write_text(textwrap.dedent("""
        from ragkit.registry import register
        from ragkit.retrievers import BM25

        @register
        class LyrBM25(BM25):
            name = "lyrbm25"
    """))
    script = textwrap.dedent(f"""
        import json, sys

        def cli_modules():
            return sorted(m for m in sys.modules if m == "typer" or m.startswith(("typer.", "ragkit.cli")))

        import ragkit.scale
        after_import = cli_modules()
        from ragkit import registry
        from ragkit._ray import _with_plugins
        # what a Ray task of the driver's own operators runs first (_ray._with_plugins: _import_plugins)
        task = _with_plugins([("lyrops", {str(tmp_path / "lyrops.py")!r})], lambda: registry.get("lyrbm25"))
        name = task().__name__
        print(json.dumps([after_import, cli_modules(), name]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    after_import, after_plugins, name = json.loads(out.stdout.strip().splitlines()[-1])
    assert after_import == [] and after_plugins == [] and name == "LyrBM25", (after_import, after_plugins)
