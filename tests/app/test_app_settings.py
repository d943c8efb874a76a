"""Settings from the environment, the serve task's command line, and the fast alias lookup."""

from __future__ import annotations

import json

import pytest
from conftest import EXAMPLE_CONFIG

from tand.tracking.lookup import AliasTarget, lookup_alias
from app.settings import EXAMPLE_TOKEN, HttpLimits, Settings, SettingsError
from app_support import copy_store
from tand.errors import RegistryError
from cli.serving import HTTP_PROTOCOL, uvicorn_command


@pytest.fixture
def config_file(tmp_path):
    config = json.loads(json.dumps(EXAMPLE_CONFIG))
    config["mlflow"]["model_name"] = "from-config"
    config["app"].update(refresh_interval=5, max_batch_rows=7)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_defaults_come_from_the_config_file(config_file):
    s = Settings.from_env({"API_TOKEN": "t", "TAND_CONFIG": str(config_file), "MODEL_CACHE_DIR": ""})
    assert (s.model_name, s.model_alias, s.refresh_interval, s.max_batch_rows) == ("from-config", "production", 5.0, 7)
    assert s.tracking_uri == "sqlite:///database.db" and s.cache_dir is None
    assert "api_token" not in repr(s)  # a logged Settings never shows the token


def test_the_environment_wins_and_model_stage_is_read_as_an_alias(config_file):
    env = {
        "API_TOKEN": "t",
        "TAND_CONFIG": str(config_file),
        "MODEL_NAME": "other",
        "MODEL_STAGE": "Production",
        "MODEL_REFRESH_INTERVAL": "0",
        "MAX_BODY_BYTES": "4096",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
    }
    s = Settings.from_env(env)
    assert (s.model_name, s.model_alias, s.refresh_interval, s.max_body_bytes) == ("other", "production", 0.0, 4096)
    assert Settings.from_env({**env, "MODEL_ALIAS": "staging"}).model_alias == "staging"
    # No config file needed when MODEL_NAME is set (a bare container).
    assert Settings.from_env({"API_TOKEN": "t", "MODEL_NAME": "m", "TAND_CONFIG": "/nowhere.json"}).max_batch_rows == 10_000


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "API_TOKEN is not set or empty"),
        ({"API_TOKEN": ""}, "API_TOKEN is not set or empty"),
        ({"API_TOKEN": "t", "MODEL_REFRESH_INTERVAL": "soon"}, "MODEL_REFRESH_INTERVAL='soon' is not a number"),
        ({"API_TOKEN": "t", "MAX_BATCH_ROWS": "0"}, "MAX_BATCH_ROWS='0' must be at least 1"),
        ({"API_TOKEN": "t", "MODEL_ALIAS": "no spaces"}, "is not a registry alias"),
        ({"API_TOKEN": "t", "TAND_CONFIG": "/nowhere.json"}, "config file not found"),
        ({"API_TOKEN": "t", "MAX_HEADER_BYTES": "512"}, "MAX_HEADER_BYTES='512' must be at least 1024"),
        ({"API_TOKEN": "t", "HEADER_TIMEOUT": "0"}, "HEADER_TIMEOUT='0' must be at least 0.1"),
        ({"API_TOKEN": "t", "BODY_TIMEOUT": "long"}, "BODY_TIMEOUT='long' is not a number"),
    ],
)
def test_bad_settings_say_which_variable(env, message, config_file):
    env = {"TAND_CONFIG": str(config_file), **env}
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Settings.from_env(env)


def test_the_example_token_is_flagged(config_file):
    assert Settings.from_env({"API_TOKEN": EXAMPLE_TOKEN, "TAND_CONFIG": str(config_file)}).uses_example_token


def test_http_limits_have_defaults_and_come_from_the_environment(config_file):
    base = {"API_TOKEN": "t", "TAND_CONFIG": str(config_file)}
    assert Settings.from_env(base).http_limits == HttpLimits(max_header_bytes=65536, header_timeout=10.0, body_timeout=30.0)
    env = {**base, "MAX_HEADER_BYTES": "16384", "HEADER_TIMEOUT": "2.5", "BODY_TIMEOUT": "60"}
    assert Settings.from_env(env).http_limits == HttpLimits(16384, 2.5, 60.0)


def test_the_serve_command_runs_uvicorn_through_the_factory_with_the_limited_protocol():
    command = uvicorn_command("127.0.0.1", 8000, 2, False)
    assert command[1:] == ["-m", "uvicorn", "--factory", "app.main:create_app", "--http", "app.http_limits:LimitedHttpToolsProtocol",
                           "--host", "127.0.0.1", "--port", "8000", "--workers", "2"]
    from uvicorn.importer import import_from_string

    from app.http_limits import PROTOCOL, LimitedHttpToolsProtocol

    assert HTTP_PROTOCOL == PROTOCOL and import_from_string(HTTP_PROTOCOL) is LimitedHttpToolsProtocol
    assert "--reload" in uvicorn_command("0.0.0.0", 80, 4, True) and "--workers" not in uvicorn_command("0.0.0.0", 80, 4, True)


def test_the_sqlite_alias_lookup_agrees_with_mlflow(trained_model, tmp_path):
    store = copy_store(trained_model.project.path / "database.db", tmp_path / "store")
    name = trained_model.model_name
    client = store.client()
    expected = client.get_model_version_by_alias(name, "production")
    assert lookup_alias(store.uri, name, "production") == AliasTarget(int(expected.version), expected.run_id, expected.source)
    new = store.register_again(name, 1)
    store.set_alias(name, "production", new)
    assert lookup_alias(store.uri, name, "production").version == new == int(client.get_model_version_by_alias(name, "production").version)
    with pytest.raises(RegistryError, match="has no alias 'staging'"):
        lookup_alias(store.uri, name, "staging")
    with pytest.raises(RegistryError, match="unreachable"):
        lookup_alias(f"sqlite:///{tmp_path / 'missing.db'}", name, "production")
    assert not (tmp_path / "missing.db").exists()  # a read-only lookup never creates a database


def test_a_stopped_tracking_server_is_reported_at_once(tmp_path):
    from app_support import free_port

    with pytest.raises(RegistryError, match=r"http://127\.0\.0\.1:\d+ is unreachable"):
        lookup_alias(f"http://127.0.0.1:{free_port()}", "m", "production")
