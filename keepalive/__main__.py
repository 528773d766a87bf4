"""``python -m keepalive``: see keepalive.cli."""

from keepalive.cli import main

raise SystemExit(main())
