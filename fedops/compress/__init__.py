from fedops.compress import fp16, none, qsgd, randk, rpn, topk  # noqa: F401  (registration)
from fedops.compress.base import CODECS, Codec, CodecContext, tensor_bytes

__all__ = ["CODECS", "Codec", "CodecContext", "tensor_bytes"]
