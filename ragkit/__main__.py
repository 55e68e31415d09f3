"""``python -m ragkit``: the ``ragkit`` command line."""

from ragkit.cli import app

if __name__ == "__main__":
    app(prog_name="ragkit")
