"""`python -m vlx` runs the `vlx` command."""

from vlx.cli import main

main()
