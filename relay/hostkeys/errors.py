"""The one error of host key management."""


class HostKeyError(Exception):
    """A host key (or its directory) is unusable; str() is a one-line message
    of the form ``"<path>: <problem>"``."""
