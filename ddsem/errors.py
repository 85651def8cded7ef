"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a single line on stderr and exit code 2; everything else is a bug.
"""


class UserError(Exception):
    """Bad input: a missing file, a wrong shape, an unknown name. Shown as one line, exit 2."""
