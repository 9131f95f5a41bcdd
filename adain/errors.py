"""Exceptions with messages meant for users (the CLI prints them as one line)."""


class AdainError(Exception):
    """Base class of the errors a user can cause and fix."""


class ImageError(AdainError):
    """An image could not be read or is not acceptable."""


class UnsupportedImage(ImageError):
    """The data is not an image in an accepted format (judged by content)."""


class ImageTooLarge(ImageError):
    """The image has more pixels than allowed (checked from its header, before decoding)."""


class WeightsError(AdainError):
    """A weight file is missing, corrupt or does not fit the architecture."""


class InputError(AdainError, ValueError):
    """Arguments that do not make sense together (weights, alpha, masks...)."""
