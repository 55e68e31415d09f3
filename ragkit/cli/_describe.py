"""``ragkit describe``: list the operators, or show one's YAML parameters."""

from __future__ import annotations

from typing import Optional

import typer
from rich.text import Text

from ragkit.cli._app import _examples, _fail, app
from ragkit.cli._console import console
from ragkit.errors import RagkitError


@app.command("describe", epilog=_examples(
    "ragkit describe",
    "ragkit describe rule_router",
    "ragkit describe parallel",
    "ragkit --import ./my_ops.py describe tfidf"))
def describe_cmd(name: Optional[str] = typer.Argument(
        None, metavar="NAME", show_default=False,
        help="An operator's name (bm25, rule_router) or a structural key of pipeline YAML (parallel, route, "
             "loop); without one, every operator is listed.")) -> None:
    """List the operators, or show one's YAML parameters (type, default, bounds, meaning).

    Without NAME, one line per registered operator (its name, kind and summary), then the
    structural keys; with NAME, what that operator or key is, the papers its docstring cites,
    and each YAML parameter with its type, default (or required), bounds and description.

    Read from the operators themselves (plugins imported with --import or $RAGKIT_IMPORT included).
    An unknown NAME is an error that suggests the closest names."""
    from ragkit._reference import describe, table_text

    try:
        text = table_text() if name is None else describe(name)
    except RagkitError as e:
        _fail(e, hint=False)  # (the module's error: its own suggestions and list; no pointer to this command)
        return
    # plain text, wrapped by the reference itself: no markup read in it (a regex's [a-z]), and no re-wrapping at
    # the terminal's width (a narrow one wraps the long lines itself; piped, nothing is cut at 80 columns)
    console.print(Text(text), soft_wrap=True)
