"""Default torch modules.

Every module maps a float32 tensor of shape ``(n_samples, n_features)`` to
logits of shape ``(n_samples, n_classes)``; image models reshape inside
``forward`` so that ``X`` stays 2-D, as scikit-learn requires. Their first
two arguments are ``n_features`` and ``n_classes``, which the estimator fills
in when it is given the class rather than an instance.
"""

import math

from torch import nn

__all__ = ["MLP", "SmallCNN"]


class MLP(nn.Module):
    """Multi-layer perceptron with ReLU activations.

    Parameters
    ----------
    n_features : int
        Input width.
    n_classes : int
        Number of logits.
    hidden_layer_sizes : tuple of int, default=(100,)
        Width of each hidden layer.
    dropout : float, default=0.0
        Probability of the :class:`~torch.nn.Dropout` after each hidden
        layer's ReLU; ``0`` adds no Dropout layer.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.modules import MLP
    >>> MLP(64, 10, hidden_layer_sizes=(32,))(torch.zeros(5, 64)).shape
    torch.Size([5, 10])
    >>> MLP(64, 10, dropout=0.2).layers
    Sequential(
      (0): Linear(in_features=64, out_features=100, bias=True)
      (1): ReLU()
      (2): Dropout(p=0.2, inplace=False)
      (3): Linear(in_features=100, out_features=10, bias=True)
    )
    """

    def __init__(self, n_features, n_classes, hidden_layer_sizes=(100,), dropout=0.0):
        super().__init__()
        widths = (n_features, *hidden_layer_sizes)
        layers = []
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(widths[-1], n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, X):
        return self.layers(X)


class SmallCNN(nn.Module):
    """Two convolution blocks and a linear head, for 1-D or 2-D signals.

    Parameters
    ----------
    n_features : int
        Input width; must equal the product of ``image_shape``.
    n_classes : int
        Number of logits.
    image_shape : tuple of int, default=None
        ``(channels, length)`` for 1-D signals or ``(channels, height,
        width)`` for images. ``None`` means a square one-channel image.
    channels : tuple of (int, int), default=(16, 32)
        Channels of the two convolution blocks.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.modules import SmallCNN
    >>> SmallCNN(64, 10, image_shape=(1, 8, 8))(torch.zeros(5, 64)).shape
    torch.Size([5, 10])
    >>> SmallCNN(40, 10, image_shape=(1, 40))(torch.zeros(5, 40)).shape
    torch.Size([5, 10])
    """

    def __init__(self, n_features, n_classes, image_shape=None, channels=(16, 32)):
        super().__init__()
        if image_shape is None:
            side = math.isqrt(n_features)
            image_shape = (1, side, side)
        if math.prod(image_shape) != n_features:
            raise ValueError(
                f"image_shape={tuple(image_shape)} holds {math.prod(image_shape)} "
                f"values but the input has {n_features} features; pass the "
                "shape one row of X reshapes into."
            )
        if len(image_shape) not in (2, 3):
            raise ValueError(
                "image_shape must be (channels, length) or (channels, height, "
                f"width); got {tuple(image_shape)}."
            )
        self.image_shape = tuple(image_shape)
        conv, pool, norm = (
            (nn.Conv1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d)
            if len(image_shape) == 2
            else (nn.Conv2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)
        )
        first, second = channels
        self.features = nn.Sequential(
            conv(image_shape[0], first, kernel_size=3, padding=1),
            nn.ReLU(),
            pool(2),
            conv(first, second, kernel_size=3, padding=1),
            nn.ReLU(),
            norm(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(second * 2 ** (len(image_shape) - 1), n_classes)

    def forward(self, X):
        return self.head(self.features(X.reshape(-1, *self.image_shape)))
