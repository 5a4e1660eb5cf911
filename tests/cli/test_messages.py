"""Messages a user reads: missing credentials named as such, help without value types on
flags, help lines in whole sentences."""

from __future__ import annotations

import inspect

import pytest
from typer.testing import CliRunner

from sapiens2_cli.cli import app
from sapiens2_cli.cli.info import info_command
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.remote import errors

SIZE = (64, 48)


def test_no_credentials_says_credentials():
    from botocore.exceptions import NoCredentialsError

    with pytest.raises(Sapiens2Error) as refused, errors("s3://bucket/x"):
        try:
            raise NoCredentialsError()
        except NoCredentialsError as e:
            raise OSError("listing failed") from e
    message = str(refused.value)
    assert "no credentials" in message and "network" not in message


def test_root_help_shows_no_value_type_on_flags():
    for command in ([], ["pca"], ["info"]):
        shown = CliRunner().invoke(app, [*command, "--help"], terminal_width=100)
        assert "<bool>" not in shown.stdout, shown.stdout


def test_each_commands_help_line_is_whole_sentences():
    first = inspect.cleandoc(info_command.__doc__).split("\n\n")[0]
    assert "\n" not in first and first.endswith(".")
