"""A PyTorch MLP behind a scikit-learn estimator, so one Pipeline holds preprocessing and network.

PyTorch is imported only inside `fit` (tand.models.network). After training the weights are kept as NumPy
arrays and the forward pass runs in NumPy: the pickled model loads and predicts
without PyTorch, so the API and its image need no torch.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from tand.models.forward import mlp_forward
from tand.models.labels import class_codes
from tand.models.network import NetworkParams, train_network


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


class _MLPBase(BaseEstimator):
    def __init__(
        self,
        hidden_sizes=(256,),
        dropout=0.1,
        lr=1e-3,
        weight_decay=0.0,
        epochs=50,
        batch_size=32,
        patience=10,
        validation_fraction=0.1,
        log_every=250,
        device="cpu",
        seed=42,
        progress=True,
    ):
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.log_every = log_every
        self.device = device
        self.seed = seed
        self.progress = progress

    # -- NumPy inference ---------------------------------------------------------
    def _forward(self, X) -> np.ndarray:
        return mlp_forward(X, self.weights_, self.biases_)

    # -- PyTorch training (tand.models.network) ------------------------------------
    def _network_params(self) -> NetworkParams:
        # The estimator's parameters are the network's, one for one.
        return NetworkParams(**{**self.get_params(), "hidden_sizes": tuple(self.hidden_sizes)})

    def _fit_network(self, X, y_encoded, n_outputs: int, loss_name: str, y_std: float = 1.0):
        """Here, or in a process that imported torch ahead of time (tand.models.network.trained_by)."""
        X = np.asarray(X, dtype=np.float32)
        fitted = train_network(X, y_encoded, n_outputs, loss_name, self._network_params(), y_std)
        self.weights_, self.biases_, self.history_ = fitted.weights, fitted.biases, fitted.history
        self.n_epochs_ = len(self.history_)
        self.n_features_in_ = X.shape[1]
        return self


class MLPClassifier(ClassifierMixin, _MLPBase):
    """Softmax MLP; `classes_` holds the label names, sorted as scikit-learn sorts them."""

    def fit(self, X, y):
        self.classes_, encoded = class_codes(y)
        return self._fit_network(X, encoded, len(self.classes_), "cross_entropy")

    def predict_proba(self, X) -> np.ndarray:
        return _softmax(self._forward(X))

    def predict(self, X) -> np.ndarray:
        return self.classes_[self._forward(X).argmax(axis=1)]


class MLPRegressor(RegressorMixin, _MLPBase):
    """MLP on a standardised target; predictions are in the target's own units."""

    def fit(self, X, y):
        y = np.asarray(y, dtype=np.float64)
        self.y_mean_, self.y_std_ = float(y.mean()), float(y.std() or 1.0)
        scaled = ((y - self.y_mean_) / self.y_std_).astype(np.float32).reshape(-1, 1)
        return self._fit_network(X, scaled, 1, "mse", self.y_std_)

    def predict(self, X) -> np.ndarray:
        return self._forward(X)[:, 0].astype(np.float64) * self.y_std_ + self.y_mean_
