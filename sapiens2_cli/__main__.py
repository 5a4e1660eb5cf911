"""`python -m sapiens2_cli` runs the CLI (also what `torchrun -m sapiens2_cli` starts)."""

from sapiens2_cli.interrupt import exit_interrupted

try:
    from sapiens2_cli.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line itself loads
    exit_interrupted()

main()
