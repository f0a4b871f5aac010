"""``python -m cmosx`` runs the command-line interface."""

from cmosx.cli.main import main

main()
