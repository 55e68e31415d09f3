"""``python -m ragkit.cli``: the ``ragkit`` command line, as ``python -m ragkit`` runs it."""

import sys

from ragkit.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
