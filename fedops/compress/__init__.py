from fedops.compress import none  # noqa: F401  (registration)
from fedops.compress.base import CODECS, Codec, tensor_bytes

__all__ = ["CODECS", "Codec", "tensor_bytes"]
