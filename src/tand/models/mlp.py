"""A PyTorch MLP behind a scikit-learn estimator, so one Pipeline holds preprocessing and network.

PyTorch is imported only inside `fit`. After training the weights are kept as NumPy
arrays and the forward pass runs in NumPy: the pickled model loads and predicts
without PyTorch, so the API and its image need no torch.
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from tand.errors import ConfigError
from tand.models.forward import mlp_forward


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


class _Adam:
    """Adam (Kingma & Ba), as torch.optim.Adam computes it.

    torch.optim's first use imports torch._dynamo, about two seconds of a training run
    that takes one second; these few lines do the same update without that import.
    """

    def __init__(self, params, lr, weight_decay, torch, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.weight_decay, self.torch = params, lr, weight_decay, torch
        self.beta1, self.beta2, self.eps, self.t = betas[0], betas[1], eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        self.t += 1
        correction1 = 1 - self.beta1**self.t
        correction2 = 1 - self.beta2**self.t
        with self.torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v):
                grad = p.grad if not self.weight_decay else p.grad.add(p, alpha=self.weight_decay)
                m.mul_(self.beta1).add_(grad, alpha=1 - self.beta1)
                v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
                denom = (v / correction2).sqrt_().add_(self.eps)
                p.addcdiv_(m, denom, value=-self.lr / correction1)


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

    # -- PyTorch training --------------------------------------------------------
    def _targets(self, y):  # pragma: no cover - overridden
        raise NotImplementedError

    def _validation_split(self, n: int, y) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        n_val = int(round(n * self.validation_fraction)) if self.patience else 0
        if n_val < 1 or n - n_val < 1:
            return np.arange(n), np.arange(0)
        order = rng.permutation(n)
        return order[n_val:], order[:n_val]

    def _fit_torch(self, X, y_encoded, n_outputs: int, loss_name: str):
        import torch
        from torch import nn
        from tqdm.auto import tqdm

        device = self._torch_device(torch)
        torch.manual_seed(self.seed)
        X = np.asarray(X, dtype=np.float32)
        train_idx, val_idx = self._validation_split(len(X), y_encoded)
        sizes = [X.shape[1], *self.hidden_sizes]
        layers: list = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU(), nn.Dropout(self.dropout)]
        layers.append(nn.Linear(sizes[-1], n_outputs))
        net = nn.Sequential(*layers).to(device)
        loss_fn = nn.CrossEntropyLoss() if loss_name == "cross_entropy" else nn.MSELoss()
        optimizer = _Adam(list(net.parameters()), self.lr, self.weight_decay, torch)
        X_t = torch.from_numpy(X).to(device)
        y_t = torch.from_numpy(y_encoded).to(device)
        train_t = torch.from_numpy(train_idx).to(device)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)

        best_loss, best_state, stale = float("inf"), None, 0
        self.history_ = []
        bar = tqdm(
            range(self.epochs), desc="training", unit="epoch", file=sys.stderr, disable=not self.progress, mininterval=0.5
        )
        for epoch in bar:
            net.train()
            order = train_t[torch.randperm(len(train_t), generator=generator).to(device)]
            running, seen = 0.0, 0
            for step, start in enumerate(range(0, len(order), self.batch_size), 1):
                batch = order[start : start + self.batch_size]
                optimizer.zero_grad()
                loss = loss_fn(net(X_t[batch]), y_t[batch])
                loss.backward()
                optimizer.step()
                running += loss.item() * len(batch)
                seen += len(batch)
                if step % self.log_every == 0:
                    bar.set_postfix(loss=f"{running / seen:.4f}")
            record = {"epoch": epoch + 1, "loss": running / max(seen, 1)}
            if len(val_idx):
                net.eval()
                with torch.no_grad():
                    val_out = net(X_t[val_idx])
                    record["val_loss"] = loss_fn(val_out, y_t[val_idx]).item()
                    record.update(self._val_metric(val_out.cpu().numpy(), y_encoded[val_idx]))
                if record["val_loss"] < best_loss - 1e-6:
                    best_loss, stale = record["val_loss"], 0
                    best_state = [p.detach().cpu().clone() for p in net.state_dict().values()]
                else:
                    stale += 1
            self.history_.append(record)
            bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "epoch"})
            if self.patience and len(val_idx) and stale >= self.patience:
                bar.write(f"early stopping at epoch {epoch + 1}: no better validation loss for {self.patience} epochs")
                break
        bar.close()
        self.n_epochs_ = len(self.history_)
        if best_state is not None:
            net.load_state_dict(dict(zip(net.state_dict().keys(), best_state)))
        linears = [m for m in net if isinstance(m, nn.Linear)]
        self.weights_ = [m.weight.detach().cpu().numpy().T.copy() for m in linears]
        self.biases_ = [m.bias.detach().cpu().numpy().copy() for m in linears]
        self.n_features_in_ = X.shape[1]
        return self

    def _torch_device(self, torch):
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"train.device: {self.device!r} asked for, but PyTorch sees no CUDA GPU here; use 'cpu'")
        if self.device == "mps" and not torch.backends.mps.is_available():
            raise ConfigError("train.device: 'mps' asked for, but this machine has no Apple GPU; use 'cpu'")
        return torch.device(self.device)

    def _val_metric(self, outputs: np.ndarray, y: np.ndarray) -> dict:  # pragma: no cover - overridden
        return {}


class MLPClassifier(ClassifierMixin, _MLPBase):
    """Softmax MLP; `classes_` holds the label names, sorted as scikit-learn sorts them."""

    def fit(self, X, y):
        self.classes_, encoded = np.unique(np.asarray(y), return_inverse=True)
        return self._fit_torch(X, encoded.astype(np.int64), len(self.classes_), "cross_entropy")

    def _val_metric(self, outputs, y):
        return {"val_accuracy": float((outputs.argmax(axis=1) == y).mean())}

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
        return self._fit_torch(X, scaled, 1, "mse")

    def _val_metric(self, outputs, y):
        return {"val_rmse": float(np.sqrt(np.mean((outputs - y) ** 2)) * self.y_std_)}

    def predict(self, X) -> np.ndarray:
        return self._forward(X)[:, 0].astype(np.float64) * self.y_std_ + self.y_mean_
