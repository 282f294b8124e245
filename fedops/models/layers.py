"""Small torch modules the model specs build with (imported by a spec's ``make``, so that loading a
config does not import torch)."""

from torch import nn


class RepeatChannels(nn.Module):
    """Repeats single-channel input to ``channels`` (torchvision models expect three)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x):
        return x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x
