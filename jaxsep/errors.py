"""The one exception type users see: a one-line message naming the file and the problem."""


class JaxsepError(Exception):
    """Bad user input (file, config, checkpoint). The CLI prints it as one line and exits 2."""
