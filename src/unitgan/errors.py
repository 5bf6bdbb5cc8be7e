"""The one exception type users see: a clear, one-line message naming what is at fault."""


class UnitganError(Exception):
    """A problem with the user's input (config, data, checkpoint, command line).

    The CLI prints ``error: <message>`` and exits with status 2; library users can catch it.
    """
