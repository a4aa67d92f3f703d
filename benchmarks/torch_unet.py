"""The same U-Net in PyTorch, as a speed peer for benchmarks only (never a keras_unet dependency)."""
import torch
from torch import nn


def conv_block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3), nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Valid convolutions, 2x2 max-pool, 2x2 up-convolution, centre-cropped skips (NCHW)."""

    def __init__(self, depth=5, base=64, in_channels=1, n_classes=2):
        super().__init__()
        widths = [base * 2**i for i in range(depth)]
        self.down = nn.ModuleList(conv_block(cin, cout) for cin, cout in zip([in_channels] + widths[:-2], widths[:-1]))
        self.bottom = conv_block(widths[-2], widths[-1])
        self.dropout = nn.Dropout(0.5)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(w * 2, w, 2, stride=2) for w in reversed(widths[:-1]))
        self.up_blocks = nn.ModuleList(conv_block(w * 2, w) for w in reversed(widths[:-1]))
        self.logits = nn.Conv2d(base, n_classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottom(x))
        for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips)):
            x = up(x)
            crop = (skip.shape[-1] - x.shape[-1]) // 2
            x = block(torch.cat([skip[..., crop : crop + x.shape[-2], crop : crop + x.shape[-1]], x], dim=1))
        return self.logits(x)
