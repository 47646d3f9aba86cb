"""``python -m dreamrl``: the ``dreamrl`` command (:func:`dreamrl.cli.console`)."""

from dreamrl.cli import console

if __name__ == "__main__":
    console()
