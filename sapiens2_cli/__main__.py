"""`python -m sapiens2_cli` runs the CLI (also what `torchrun -m sapiens2_cli` starts)."""

from sapiens2_cli.cli import main

main()
