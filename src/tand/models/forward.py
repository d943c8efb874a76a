"""The MLP's forward pass in NumPy: shared by the estimator and the API's compiled path (NumPy only, no
scikit-learn or PyTorch import, so the API can start without them)."""

from __future__ import annotations

import numpy as np


def mlp_forward(X, weights, biases) -> np.ndarray:
    """float32 Linear → ReLU → ... → Linear, as the trained torch.nn.Sequential computes it (dropout off).

    Each row is multiplied on its own (a stack of 1-row products): BLAS picks its kernel, and with it
    the order of a dot product's additions, by the number of rows, so in one (n, k) product a row's
    last bits depend on how many rows came with it. Row by row, a row gets the same answer alone, in
    any batch, and in the API's coalesced calls (app/coalesce.py), at about the same speed (1,000 rows:
    1.37 ms against 1.26 ms here)."""
    out = np.asarray(X, dtype=np.float32)[:, None, :]
    last = len(weights) - 1
    for i, (weight, bias) in enumerate(zip(weights, biases)):
        out = out @ weight
        out += bias
        if i < last:
            out = np.maximum(out, 0, out=out)
    return out[:, 0, :]
