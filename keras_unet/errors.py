"""The project's error family: everything the user can fix by changing an input.

The CLI turns exactly these (and OS errors: missing, unreadable or unwritable files) into one line
naming the file or option and the problem, exit code 2; any other exception is a bug and keeps its
traceback. Messages say what to do where they can ("use 492 or 508").
"""


class UserInputError(ValueError):
    """Bad input from the user; the message is one line naming the file or setting."""


class DataError(UserInputError):
    """An image, mask or dataset folder that cannot be used as it is."""


class InvalidSizeError(UserInputError):
    """An input or tile size the network cannot take; the message names the nearest valid sizes."""


class SettingsError(UserInputError):
    """A setting out of range or inconsistent with the data or the model."""


class ModelFileError(UserInputError):
    """A model file or run folder that is missing, empty, truncated or not a U-Net."""


class ExportError(UserInputError):
    """An export that cannot be written as asked or fails its check against the Keras model."""


def one_line(err: BaseException) -> str:
    """The first line of an error's message (its type name if it has none)."""
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def user_message(err: BaseException) -> str | None:
    """The one line a user is shown for an error they can fix (a :class:`UserInputError`, or an
    OS error: missing, unreadable, unwritable file), naming the file; None for any other error (a bug).
    The CLI and the napari widget show the same words."""
    if isinstance(err, UserInputError):
        return one_line(err)
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename and str(err.filename) not in str(err.strerror or "") else ""
        return f"{where}{err.strerror or one_line(err)}"
    return None
