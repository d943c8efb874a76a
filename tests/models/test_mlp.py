import pickle
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from tand.models.mlp import MLPClassifier, MLPRegressor


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 5)).astype(np.float32)
    y = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, "yes", "no")
    return X, y


def test_numpy_forward_matches_torch(blobs):
    import torch
    from torch import nn

    X, y = blobs
    model = MLPClassifier(hidden_sizes=(16, 8), epochs=3, patience=0, progress=False).fit(X, y)
    layers = []
    for i, (w, b) in enumerate(zip(model.weights_, model.biases_)):
        linear = nn.Linear(*w.shape)
        linear.weight.data = torch.from_numpy(w.T.copy())
        linear.bias.data = torch.from_numpy(b)
        layers += [linear] + ([nn.ReLU()] if i < len(model.weights_) - 1 else [])
    with torch.no_grad():
        expected = torch.softmax(nn.Sequential(*layers)(torch.from_numpy(X)), dim=1).numpy()
    np.testing.assert_allclose(model.predict_proba(X), expected, atol=1e-5)
    assert list(model.classes_) == ["no", "yes"]


def test_learns_and_stops_early(blobs):
    X, y = blobs
    model = MLPClassifier(hidden_sizes=(32,), epochs=300, patience=3, lr=0.01, progress=False).fit(X, y)
    assert model.n_epochs_ < 300, "early stopping never triggered"
    assert (model.predict(X) == y).mean() > 0.9


def test_regressor_predicts_in_target_units(blobs):
    X, _ = blobs
    target = 100 + 20 * X[:, 0]
    model = MLPRegressor(hidden_sizes=(32,), epochs=60, lr=0.01, patience=0, progress=False).fit(X, target)
    assert np.abs(model.predict(X) - target).mean() < 5


def test_a_trained_model_unpickles_and_predicts_without_torch(blobs, tmp_path):
    X, y = blobs
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(MLPClassifier(hidden_sizes=(8,), epochs=2, progress=False).fit(X, y)))
    code = (
        "import pickle, sys, numpy as np\n"
        f"m = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        "print(m.predict(np.zeros((2, 5), dtype=np.float32)))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0, done.stderr


def test_a_rows_output_does_not_depend_on_the_batch_it_came_in():
    # In one (n, 256) @ (256, 2) product, BLAS's kernel (and its order of additions) depends on n: a
    # row's last bits would depend on its batch (and on the API's coalescing of requests).
    from tand.models.forward import mlp_forward

    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(30, 256)).astype(np.float32), rng.normal(size=(256, 2)).astype(np.float32)]
    biases = [rng.normal(size=256).astype(np.float32), rng.normal(size=2).astype(np.float32)]
    X = rng.normal(size=(300, 30))
    whole = mlp_forward(X, weights, biases)
    for n in range(1, 300):
        assert np.array_equal(mlp_forward(X[:n], weights, biases), whole[:n]), f"batch of {n}"
