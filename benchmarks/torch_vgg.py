"""The same VGG-19 in PyTorch, for the benchmarks' side-by-side references (imported only with torch)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from mmdstyle.features import VGG19, VGG19_LAYERS


def torch_features(
    model: VGG19, layers: Sequence[str], device: str = "cpu"
) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """``features(image NCHW in [0, 1]) -> {layer: (channels, h, w)}`` with ``model``'s weights.

    Torchvision preprocessing; the model's pooling (max or average) and zero padding; the
    weights on ``device``.
    """
    deepest = max(VGG19_LAYERS.index(name) for name in layers)
    names = VGG19_LAYERS[: deepest + 1]
    modules, convolutions = [], iter(model.convolutions)
    for name in names:
        if name.startswith("conv"):
            convolution = next(convolutions)
            kernel = np.asarray(convolution.kernel[...])
            conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], 3, padding=1)
            conv.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
            conv.bias.data = torch.from_numpy(np.asarray(convolution.bias[...]).copy())
            modules.append(conv.requires_grad_(False).to(device))
        elif name.startswith("relu"):
            modules.append(torch.nn.ReLU())
        else:
            modules.append(torch.nn.AvgPool2d(2) if model.pooling == "average" else torch.nn.MaxPool2d(2))
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).reshape(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).reshape(1, 3, 1, 1)
    wanted = set(layers)

    def features(image: torch.Tensor) -> dict[str, torch.Tensor]:
        x, outputs = (image - mean) / std, {}
        for name, module in zip(names, modules, strict=True):
            x = module(x)
            if name in wanted:
                outputs[name] = x[0]
        return outputs

    return features
