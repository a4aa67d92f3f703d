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
