"""Your own classifier for losstune: an ordinary PyTorch module, as in the tutorials.

losstune builds it as ``BinaryClassifier(n_features, **kwargs)`` (``kwargs``: the study file's ``model.kwargs``;
``n_features``: the width of the preprocessed table, numeric columns plus one-hot categories) and trains it with
the loss it is tuning. ``forward`` returns one logit per row (no sigmoid): shape ``[rows]`` or ``[rows, 1]``.
See studies/my_model.yaml for the study that uses it.
"""

from collections.abc import Sequence

from torch import nn


class BinaryClassifier(nn.Module):
    def __init__(self, n_features: int, hidden: Sequence[int] = (64, 32), dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))  # one logit: losstune's loss works from logits
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)  # [rows, 1]
