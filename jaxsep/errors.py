"""The one exception type users see: a one-line message naming the file and the problem."""

import numbers


class JaxsepError(Exception):
    """Bad user input (file, config, checkpoint). The CLI prints it as one line and exits 2."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name if the message is empty): what a
    one-line error or a benchmark record quotes of a library's multi-line exception."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    # tensorstore appends the whole JSON spec of the array it failed on: noise in one line
    return line.split(" [tensorstore_spec=")[0]


def is_count(value: object, low: int = 1) -> bool:
    """An integer (Python or numpy, not a bool) of at least ``low``."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= low


def check_sizes(owner: str, **sizes: object) -> None:
    """Every size a positive integer, else a one-line error naming ``owner`` and the field: a zero
    or negative layer width would otherwise fail deep inside XLA with a shape traceback."""
    for name, value in sizes.items():
        if not is_count(value):
            raise JaxsepError(f"{owner}: {name} must be a positive integer, got {value!r}")
