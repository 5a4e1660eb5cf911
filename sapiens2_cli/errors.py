"""The one exception type the project raises for problems a user can fix."""


class Sapiens2Error(Exception):
    """A problem with the user's input, flags, files or environment.

    The message is a single sentence that says what is wrong and what to do; the CLI
    prints it as one line on stderr and exits non-zero, without a traceback.
    """
