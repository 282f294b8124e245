"""Exceptions of the secure-aggregation package."""

from fedops.errors import FedopsError


class SecAggError(FedopsError):
    """Base class for secure-aggregation failures."""


class SecAggAborted(SecAggError):
    """The protocol stopped without output: nothing was unmasked, no sum is returned.

    ``reason`` says why (too few survivors, too few shares of a needed secret, ...).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"secure aggregation aborted: {reason}")
        self.reason = reason


class ProtocolViolation(SecAggError):
    """A party received a message that breaks the protocol and refuses to continue."""


class ShareDecryptionError(SecAggError):
    """An encrypted share failed authentication or did not carry the expected header."""


class InsufficientNeighbours(SecAggError):
    """A client has fewer live neighbours than the threshold and cannot share its secrets."""
