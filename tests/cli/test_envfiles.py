from conftest import REPO
from cli.envfiles import load_env_files, parse_env_file


def test_env_file_values_fill_only_what_the_environment_lacks(tmp_path):
    env_file = tmp_path / "a.env"
    env_file.write_text("# comment\nA=from-file\nB='quoted value'\nexport C=3 # trailing\n\n")
    environ = {"A": "from-shell"}
    applied = load_env_files(env_file, environ=environ)
    assert environ == {"A": "from-shell", "B": "quoted value", "C": "3"}
    assert applied == {"B": "quoted value", "C": "3"}


def test_shipped_env_files_use_the_seed_names_and_disable_telemetry():
    train = parse_env_file(REPO / "env_files" / "train.env")
    assert train["MLFLOW_TRACKING_URI"] == "sqlite:///database.db"
    assert train["MLFLOW_DEFAULT_ARTIFACT_ROOT"] == "./mlruns/"
    for name in ("train.env", "app.env", "docker_app.env"):
        assert parse_env_file(REPO / "env_files" / name)["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert "API_TOKEN" in parse_env_file(REPO / "env_files" / "app.env")
