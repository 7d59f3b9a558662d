"""``python -m orchestrator`` is the ``parcours`` command."""

from orchestrator.cli import main

main()
