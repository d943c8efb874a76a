"""The MLP's forward pass in NumPy: shared by the estimator and the API's compiled path (NumPy only, no
scikit-learn or PyTorch import, so the API can start without them)."""

from __future__ import annotations

import numpy as np


def mlp_forward(X, weights, biases) -> np.ndarray:
    """float32 Linear → ReLU → ... → Linear, as the trained torch.nn.Sequential computes it (dropout off)."""
    out = np.asarray(X, dtype=np.float32)
    last = len(weights) - 1
    for i, (weight, bias) in enumerate(zip(weights, biases)):
        out = out @ weight
        out += bias
        if i < last:
            out = np.maximum(out, 0, out=out)
    return out
