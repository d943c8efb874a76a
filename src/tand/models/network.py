"""Training the MLP's network with PyTorch: NumPy arrays in, NumPy weights and a history out.

It imports torch only inside `fit_network`. Its inputs and outputs are plain arrays and small
dataclasses, so it can run in the estimator's process or in a process of its own that imported
torch ahead of time (tand.training.workers.TorchProcess): `trained_by(runner)` makes every MLP fitted
inside it call `runner` instead of `fit_network`, with the same arguments and result. The estimator's
`fit` signature stays scikit-learn's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from tand.errors import ConfigError


@dataclass(frozen=True)
class NetworkParams:
    hidden_sizes: tuple[int, ...]
    dropout: float
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    patience: int
    validation_fraction: float
    log_every: int
    device: str
    seed: int
    progress: bool


@dataclass
class FittedNetwork:
    weights: list[np.ndarray]  # (fan_in, fan_out) per layer, float32
    biases: list[np.ndarray]
    history: list[dict] = field(default_factory=list)


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


def validation_split(n: int, params: NetworkParams) -> tuple[np.ndarray, np.ndarray]:
    """(train indexes, validation indexes) for early stopping; no validation rows without patience."""
    rng = np.random.default_rng(params.seed)
    n_val = int(round(n * params.validation_fraction)) if params.patience else 0
    if n_val < 1 or n - n_val < 1:
        return np.arange(n), np.arange(0)
    order = rng.permutation(n)
    return order[n_val:], order[:n_val]


def torch_device(torch, device: str):
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {device!r} asked for, but PyTorch sees no CUDA GPU here; use 'cpu'")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device: 'mps' asked for, but this machine has no Apple GPU; use 'cpu'")
    return torch.device(device)


def _validation_metric(loss_name: str, outputs: np.ndarray, y: np.ndarray, y_std: float) -> dict:
    if loss_name == "cross_entropy":
        return {"val_accuracy": float((outputs.argmax(axis=1) == y).mean())}
    return {"val_rmse": float(np.sqrt(np.mean((outputs - y) ** 2)) * y_std)}


_runner: ContextVar[Callable | None] = ContextVar("network_runner", default=None)


@contextmanager
def trained_by(runner: Callable | None) -> Iterator[None]:
    """Inside this block, MLP estimators train their network with `runner` (fit_network's signature)."""
    token = _runner.set(runner)
    try:
        yield
    finally:
        _runner.reset(token)


def train_network(*args) -> FittedNetwork:
    """fit_network(*args), or the runner of the enclosing `trained_by` block."""
    return (_runner.get() or fit_network)(*args)


# Below this many values per layer output (batch rows × layer width), PyTorch's CPU threads cost more
# than they give (ATen splits work only past 32,768 elements; the default config, 32 × 256, fits in
# 0.21 s on one thread and 0.36 s on two here) and take a core `invoke train`'s other processes use.
ONE_THREAD_BELOW = 32_768


def fit_network(
    X: np.ndarray, y: np.ndarray, n_outputs: int, loss_name: str, params: NetworkParams, y_std: float = 1.0
) -> FittedNetwork:
    """Train Linear → ReLU → Dropout ... → Linear on float32 `X` and encoded `y` (class indexes for
    "cross_entropy", standardised targets of shape (n, 1) for "mse"), with early stopping on a
    validation split; returns the best epoch's weights. `y_std` scales the regression metric back."""
    try:
        import torch
    except ImportError:
        raise ConfigError(
            "train.framework: 'pytorch' needs PyTorch, which is not installed here; "
            "pip install -r requirements.txt (torch==2.13.0), or set framework to 'sklearn'"
        ) from None
    threads = torch.get_num_threads()
    widest = max([X.shape[1], *params.hidden_sizes, n_outputs])
    if params.device == "cpu" and params.batch_size * widest <= ONE_THREAD_BELOW:
        torch.set_num_threads(1)
    try:
        return _fit(torch, X, y, n_outputs, loss_name, params, y_std)
    finally:
        torch.set_num_threads(threads)


def _fit(torch, X, y, n_outputs, loss_name, params: NetworkParams, y_std: float) -> FittedNetwork:
    from torch import nn
    from tqdm.auto import tqdm

    device = torch_device(torch, params.device)
    torch.manual_seed(params.seed)
    X = np.asarray(X, dtype=np.float32)
    train_idx, val_idx = validation_split(len(X), params)
    sizes = [X.shape[1], *params.hidden_sizes]
    layers: list = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU(), nn.Dropout(params.dropout)]
    layers.append(nn.Linear(sizes[-1], n_outputs))
    net = nn.Sequential(*layers).to(device)
    loss_fn = nn.CrossEntropyLoss() if loss_name == "cross_entropy" else nn.MSELoss()
    optimizer = _Adam(list(net.parameters()), params.lr, params.weight_decay, torch)
    X_t = torch.from_numpy(X).to(device)
    y_t = torch.from_numpy(y).to(device)
    train_t = torch.from_numpy(train_idx).to(device)
    generator = torch.Generator(device="cpu").manual_seed(params.seed)

    best_loss, best_state, stale = float("inf"), None, 0
    history: list[dict] = []
    bar = tqdm(range(params.epochs), desc="training", unit="epoch", file=sys.stderr, disable=not params.progress, mininterval=0.5)
    for epoch in bar:
        net.train()
        order = train_t[torch.randperm(len(train_t), generator=generator).to(device)]
        running, seen = 0.0, 0
        for step, start in enumerate(range(0, len(order), params.batch_size), 1):
            batch = order[start : start + params.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(net(X_t[batch]), y_t[batch])
            loss.backward()
            optimizer.step()
            running += loss.item() * len(batch)
            seen += len(batch)
            if step % params.log_every == 0:
                bar.set_postfix(loss=f"{running / seen:.4f}")
        record = {"epoch": epoch + 1, "loss": running / max(seen, 1)}
        if len(val_idx):
            net.eval()
            with torch.no_grad():
                val_out = net(X_t[val_idx])
                record["val_loss"] = loss_fn(val_out, y_t[val_idx]).item()
                record.update(_validation_metric(loss_name, val_out.cpu().numpy(), y[val_idx], y_std))
            if record["val_loss"] < best_loss - 1e-6:
                best_loss, stale = record["val_loss"], 0
                best_state = [p.detach().cpu().clone() for p in net.state_dict().values()]
            else:
                stale += 1
        history.append(record)
        bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "epoch"})
        if params.patience and len(val_idx) and stale >= params.patience:
            bar.write(f"early stopping at epoch {epoch + 1}: no better validation loss for {params.patience} epochs")
            break
    bar.close()
    if best_state is not None:
        net.load_state_dict(dict(zip(net.state_dict().keys(), best_state)))
    linears = [m for m in net if isinstance(m, nn.Linear)]
    weights = [m.weight.detach().cpu().numpy().T.copy() for m in linears]
    biases = [m.bias.detach().cpu().numpy().copy() for m in linears]
    return FittedNetwork(weights, biases, history)
