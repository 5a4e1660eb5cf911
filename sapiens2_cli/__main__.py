"""`python -m sapiens2_cli` runs the CLI (also what `torchrun -m sapiens2_cli` starts)."""

from sapiens2_cli.interrupt import exit_on_ctrl_c_in_imports

exit_on_ctrl_c_in_imports()  # before the command line itself loads

from sapiens2_cli.cli import main  # noqa: E402

main()
