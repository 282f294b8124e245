"""Model zoo: small CNN, the PyTorch-MNIST CNN, an MLP for tabular data, torchvision by name."""

from fedops.models import mlp, mnist_cnn, small_cnn, torchvision  # noqa: F401  (registration)
from fedops.models.base import MODELS, ModelSpec

__all__ = ["MODELS", "ModelSpec"]
