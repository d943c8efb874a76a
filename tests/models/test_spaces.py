"""Search spaces for `invoke tune`: the catalog's, config.json's overrides, and one clear line for a bad one."""

import pytest

from tand.errors import ConfigError
from tand.models.spaces import SPACES, Range, example_params, search_space


def test_an_override_replaces_the_parameters_it_names_and_adds_new_ones():
    space = search_space("random_forest", {"random_forest": {"max_depth": {"low": 3, "high": 5}, "criterion": ["gini", "entropy"]}})
    assert space["max_depth"] == Range(3, 5) and space["max_depth"].integer
    assert space["criterion"] == ["gini", "entropy"]
    assert space["n_estimators"] == SPACES["random_forest"]["n_estimators"]
    assert example_params(space)["criterion"] == "gini"


@pytest.mark.parametrize(
    "override",
    [{"low": 1, "high": 0.5}, {"low": 0, "high": 1, "log": True}, {"low": 1}, [], {"low": "a", "high": 2}, {"lo": 1, "hi": 2}],
)
def test_a_bad_range_is_one_line_naming_the_key(override):
    with pytest.raises(ConfigError, match=r"^tune\.space\.logistic_regression\.C: expected") as caught:
        search_space("logistic_regression", {"logistic_regression": {"C": override}})
    assert "\n" not in str(caught.value)


def test_an_unknown_model_in_the_space_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"tune\.space: no model named 'lightgbmm'; models: .*lightgbm"):
        search_space("lightgbm", {"lightgbmm": {}})


def test_every_catalog_and_boosting_model_has_a_space():
    from tand.models.catalog import known_models

    assert set(known_models("classification")) | set(known_models("regression")) | {"mlp", "lightgbm", "xgboost", "catboost"} <= set(SPACES)
