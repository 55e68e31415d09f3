"""The ``ragkit`` command line: eval, train, search, ask, validate, describe, compare.

``ragkit eval --data scifact --pipeline hybrid.yaml`` fits the pipeline on the corpus,
runs the split's queries, prints a metrics table and writes JSON.  ``--pipeline`` takes a
YAML file, a saved folder (``Pipeline.save``'s, or ``Operator.save``'s as a one-operator
pipeline) or a registered operator name (a one-operator pipeline with its defaults).  ``--data``
on an archive of several BEIR datasets (``cqadupstack``) evaluates each and their mean;
``--data cqadupstack/android`` evaluates one.
Output files are checked (their folders created) before any work starts and written
atomically (a temporary file in the same folder, renamed into place).

Exit status: 0 on success; 2 for a usage error or bad input (an unknown option, a missing file, a
malformed pipeline or dataset, an output path that would replace an input), refused before work
starts where it can be (a model path that holds no model too); 1 for a failure while running (a
download, a model load or a write that failed); 130 when interrupted (Ctrl-C); 141 when standard
output's reader closed the pipe.  Notes and warnings go to standard error; standard output carries
the results alone.
"""

# isort: off
# the typer app first, then the command modules, each registering its command on it, in the order
# ``ragkit --help`` lists them
from ragkit.cli._app import app
from ragkit.cli import _eval, _train, _search, _ask, _validate, _describe, _compare  # noqa: F401
from ragkit.cli._main import main

# isort: on

__all__ = ["app", "main"]
