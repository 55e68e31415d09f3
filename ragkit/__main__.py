"""``python -m ragkit`` and the ``ragkit`` script: the ``ragkit`` command line."""

import sys


def main() -> None:
    """The ``ragkit`` console script: :func:`ragkit.cli.main` on ``sys.argv``, exiting with its status.  Ctrl-C
    while the command line is still loading (importing ``ragkit.cli`` and its dependencies takes a second)
    prints ``interrupted`` on stderr and exits 130, as Ctrl-C during a command does, instead of a Python
    traceback."""
    try:
        from ragkit.cli import main as run

        status = run()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
        status = 130
    sys.exit(status)


if __name__ == "__main__":
    main()
