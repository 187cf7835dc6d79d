"""``python -m audiences`` runs the command line."""

from audiences.cli import main

main()
