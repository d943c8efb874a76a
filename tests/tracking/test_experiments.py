"""Experiments the template creates: shown as model-training experiments, created once even when raced."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import mlflow
from mlflow import MlflowClient

from tand.tracking import registry


def test_a_new_experiment_opens_as_a_model_training_one_not_genai(project):
    experiment_id = registry.ensure_experiment("churn-experiment")
    tags = MlflowClient().get_experiment(experiment_id).tags
    assert tags.get("mlflow.experimentKind") == "custom_model_development"
    assert registry.ensure_experiment("churn-experiment") == experiment_id


def test_an_experiment_created_meanwhile_is_success(project, monkeypatch):
    """The window between "does it exist?" and "create it": another process creates it first."""
    real = mlflow.create_experiment

    def created_by_someone_else_first(name, **kwargs):
        real(name, **kwargs)  # the other process wins the race ...
        return real(name, **kwargs)  # ... and this one's create fails on MLflow's unique constraint

    monkeypatch.setattr(mlflow, "create_experiment", created_by_someone_else_first)
    experiment_id = registry.ensure_experiment("raced")
    assert MlflowClient().get_experiment(experiment_id).name == "raced"


def test_threads_racing_to_create_one_experiment_all_get_its_id(project):
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda _: registry.ensure_experiment("shared"), range(4)))
    assert len(set(ids)) == 1
