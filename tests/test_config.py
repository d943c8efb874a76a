import json

import pytest

from conftest import REPO
from tand.config import Config, json_schema, load_config, parse_config
from tand.errors import ConfigError

TAND_PYTORCH = {
    "train": {
        "__help": "Configurations for the training of the project (of the model, etc...)",
        "data_path": "data/data.csv",
        "labels_column": "target",
        "log_every": 250,
        "epochs": 50,
        "hidden_dim": 256,
        "batch_size": 32,
        "device": "cpu",
        "labels": ["no_heart_disease", "heart_disease"],
        "to_drop": [],
    },
    "test": {"__help": "Configurations for the testing of the project (of the model, etc...)"},
    "app": {"__help": "Configurations for the API service of the project"},
    "mlflow": {
        "__help": "Configurations for the mlflow model manager of the project",
        "model_name": "pytorch-classifier-nn-heart-disease",
        "experiment_name": "heart-disease-experiment",
    },
}


def tand_sklearn() -> dict:
    config = json.loads(json.dumps(TAND_PYTORCH))
    for key in ("epochs", "hidden_dim", "batch_size", "device", "log_every"):
        del config["train"][key]
    config["train"].update(model="random_forest", model_args={"n_estimators": 50})
    return config


def test_tand_pytorch_config_is_accepted_unchanged_and_trains_pytorch():
    cfg = parse_config(TAND_PYTORCH)
    assert cfg.train.framework == "pytorch"
    assert cfg.train.labels == ["no_heart_disease", "heart_disease"]
    assert cfg.mlflow.model_name == "pytorch-classifier-nn-heart-disease"


def test_tand_sklearn_config_trains_sklearn():
    cfg = parse_config(tand_sklearn())
    assert cfg.train.framework == "sklearn"
    assert cfg.train.model == "random_forest"


def test_shipped_config_is_valid_and_points_at_the_shipped_schema():
    raw = json.loads((REPO / "config.json").read_text())
    cfg = load_config(REPO / "config.json")
    assert cfg.train.framework == "pytorch" and cfg.train.task == "classification"
    schema_path = REPO / raw["$schema"]
    assert json.loads(schema_path.read_text()) == json_schema(), "config.schema.json is stale: run `invoke config-schema`"


def test_misspelled_key_is_named_with_a_suggestion():
    config = json.loads(json.dumps(TAND_PYTORCH))
    config["train"]["labels_colum"] = config["train"].pop("labels_column")
    with pytest.raises(ConfigError) as err:
        parse_config(config)
    message = str(err.value)
    assert "'train.labels_colum'" in message and "did you mean 'labels_column'" in message
    assert "missing required key 'train.labels_column'" in message


def test_unknown_top_level_section_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key 'trian'.*did you mean 'train'"):
        parse_config({**TAND_PYTORCH, "trian": {}})


def test_invalid_choice_lists_the_valid_values():
    config = json.loads(json.dumps(TAND_PYTORCH))
    config["train"]["framework"] = "tensorflow"
    with pytest.raises(ConfigError, match=r"train.framework: Input should be 'sklearn' or 'pytorch'"):
        parse_config(config)


def test_unknown_model_lists_known_models():
    config = tand_sklearn()
    config["train"]["model"] = "random_forrest"
    with pytest.raises(ConfigError) as err:
        parse_config(config)
    assert "did you mean 'random_forest'" in str(err.value)
    assert "knn" in str(err.value) and "logistic_regression" in str(err.value)


def test_regression_models_differ_from_classifiers():
    config = tand_sklearn()
    config["train"].update(task="regression", model="ridge", model_args={})
    del config["train"]["labels"]
    assert parse_config(config).train.model == "ridge"
    config["train"]["model"] = "logistic_regression"
    with pytest.raises(ConfigError, match="unknown regression model"):
        parse_config(config)


def test_missing_file_and_bad_json_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": {,}')
    with pytest.raises(ConfigError, match=r"not valid JSON \(line 1"):
        load_config(bad)


def test_hidden_dim_takes_a_list_of_layer_sizes():
    config = json.loads(json.dumps(TAND_PYTORCH))
    config["train"]["hidden_dim"] = [64, 32]
    assert parse_config(config).train.hidden_sizes == [64, 32]
    config["train"]["hidden_dim"] = [64, 0]
    with pytest.raises(ConfigError, match="hidden sizes must be positive"):
        parse_config(config)


def test_schema_documents_every_train_key():
    keys = set(json_schema()["$defs"]["TrainConfig"]["properties"])
    assert {"data_path", "labels_column", "labels", "framework", "task", "model", "model_args", "epochs"} <= keys
    assert set(Config.model_fields) >= {"train", "app", "mlflow"}
