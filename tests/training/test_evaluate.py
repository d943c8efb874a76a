"""tand.training.evaluate's numbers against scikit-learn's own functions, on small fixed examples."""

import numpy as np
import pytest
from sklearn import metrics as skm

from tand.training.evaluate import Predictions, compute_metrics

CLASSES = ("spam", "ham")  # configured order: the positive class of a binary problem is the second
Y_TRUE = np.array(["spam", "ham", "ham", "spam", "ham", "ham", "spam", "ham"])
P_HAM = np.array([0.1, 0.8, 0.6, 0.4, 0.3, 0.9, 0.7, 0.55])


def binary() -> Predictions:
    proba = np.column_stack([1 - P_HAM, P_HAM])
    return Predictions(Y_TRUE, np.where(P_HAM >= 0.5, "ham", "spam"), proba, CLASSES)


def test_binary_metrics_equal_scikit_learns():
    p = binary()
    got = compute_metrics(p)
    positive = Y_TRUE == "ham"
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(Y_TRUE, p.y_pred))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(Y_TRUE, p.y_pred))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(positive, P_HAM))
    assert got["average_precision"] == pytest.approx(skm.average_precision_score(positive, P_HAM))
    assert got["log_loss"] == pytest.approx(skm.log_loss(Y_TRUE, np.column_stack([P_HAM, 1 - P_HAM]), labels=["ham", "spam"]))
    for name in CLASSES:
        assert got[f"precision_{name}"] == pytest.approx(skm.precision_score(Y_TRUE, p.y_pred, pos_label=name))
        assert got[f"recall_{name}"] == pytest.approx(skm.recall_score(Y_TRUE, p.y_pred, pos_label=name))
        assert got[f"f1_{name}"] == pytest.approx(skm.f1_score(Y_TRUE, p.y_pred, pos_label=name))
        other = next(c for c in CLASSES if c != name)
        assert got[f"specificity_{name}"] == pytest.approx(skm.recall_score(Y_TRUE, p.y_pred, pos_label=other))
        assert got[f"npv_{name}"] == pytest.approx(skm.precision_score(Y_TRUE, p.y_pred, pos_label=other))
        assert got[f"fpr_{name}"] == pytest.approx(1 - got[f"specificity_{name}"])


def test_multiclass_metrics_equal_scikit_learns():
    rng = np.random.default_rng(3)
    classes = ("a", "b", "c")
    y = rng.choice(classes, 30)
    proba = rng.dirichlet([1, 1, 1], 30)
    pred = np.asarray(classes)[proba.argmax(axis=1)]
    got = compute_metrics(Predictions(y, pred, proba, classes))
    onehot = np.column_stack([y == c for c in classes])
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(onehot, proba, average="macro"))
    assert got["average_precision"] == pytest.approx(skm.average_precision_score(onehot, proba, average="macro"))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=list(classes)))
    recalls = skm.recall_score(y, pred, labels=list(classes), average=None)
    assert [got[f"recall_{c}"] for c in classes] == pytest.approx(list(recalls))


def test_regression_metrics_equal_scikit_learns():
    y = np.array([3.0, -0.5, 2.0, 7.0, 4.2])
    pred = np.array([2.5, 0.0, 2.0, 8.0, 4.0])
    got = compute_metrics(Predictions(y, pred, None, None))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(y, pred))
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred))
    assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, pred))
    assert "mape" not in compute_metrics(Predictions(np.array([0.0, 1.0]), np.array([0.1, 0.9]), None, None))


# An imbalanced binary problem whose minority ("fraud", 2 of 10) is the first configured class: the
# positive class is named, not taken as the second column.
FRAUD_CLASSES = ("fraud", "ok")
FRAUD_TRUE = np.array(["ok", "ok", "fraud", "ok", "ok", "ok", "fraud", "ok", "ok", "ok"])
P_FRAUD = np.array([0.05, 0.2, 0.35, 0.1, 0.4, 0.02, 0.15, 0.08, 0.3, 0.12])


def test_binary_scores_are_for_the_named_positive_class_and_labels_follow_its_threshold():
    from tand.schema import FeatureSchema
    from tand.training.evaluate import decide

    schema = FeatureSchema((), "classification", "y", FRAUD_CLASSES, positive_class="fraud", threshold=0.3)
    proba = np.column_stack([P_FRAUD, 1 - P_FRAUD])
    pred = decide(proba, schema)
    assert pred.tolist() == np.where(P_FRAUD >= 0.3, "fraud", "ok").tolist()
    got = compute_metrics(Predictions(FRAUD_TRUE, pred, proba, FRAUD_CLASSES, "fraud"))
    fraud = FRAUD_TRUE == "fraud"
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(fraud, P_FRAUD))
    assert got["average_precision"] == pytest.approx(skm.average_precision_score(fraud, P_FRAUD))
    assert got["average_precision_fraud"] == got["average_precision"]
    assert got["average_precision_ok"] == pytest.approx(skm.average_precision_score(~fraud, 1 - P_FRAUD))
    assert got["recall_fraud"] == pytest.approx(skm.recall_score(FRAUD_TRUE, pred, pos_label="fraud"))
    assert got["precision_fraud"] == pytest.approx(skm.precision_score(FRAUD_TRUE, pred, pos_label="fraud"))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(FRAUD_TRUE, pred))


def test_without_a_threshold_labels_are_the_argmax():
    from tand.schema import FeatureSchema
    from tand.training.evaluate import decide

    proba = np.column_stack([P_FRAUD, 1 - P_FRAUD])
    for schema in (
        FeatureSchema((), "classification", "y", FRAUD_CLASSES, positive_class="fraud"),
        FeatureSchema((), "classification", "y", FRAUD_CLASSES),
    ):
        assert decide(proba, schema).tolist() == ["ok"] * len(P_FRAUD)
