"""``python -m dreamrl``: the command-line interface."""

from dreamrl.cli import main

raise SystemExit(main())
