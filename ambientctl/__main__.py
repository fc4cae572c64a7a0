"""`python -m ambientctl` runs the CLI."""

from ambientctl.cli import main

raise SystemExit(main())
