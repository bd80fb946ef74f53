"""``python -m acefleetctl``: the same as the ``acefleet`` console script."""

from acefleetctl.cli import main

raise SystemExit(main())
