"""The rendered Elastic Beanstalk files: they parse, use only options that exist, and the hook installs a valid timer."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ship_support import REPO
from tand.config import parse_config
from tand.shipping.eb import HOOK, HOOK_COPIES, SCALING, DeployError, render, settings_from

# Option namespaces and names this template may set, from "General options for all environments"
# (https://docs.aws.amazon.com/elasticbeanstalk/latest/dg/command-options-general.html), which applies to the
# Docker platform on Amazon Linux 2023. aws:elasticbeanstalk:application:environment takes any property name.
ALLOWED_OPTIONS = {
    "aws:elasticbeanstalk:application:environment": None,
    "aws:elasticbeanstalk:application": {"Application Healthcheck URL"},
    "aws:elasticbeanstalk:environment:process:default": {
        "DeregistrationDelay", "HealthCheckInterval", "HealthCheckPath", "HealthCheckTimeout", "HealthyThresholdCount",
        "MatcherHTTPCode", "Port", "Protocol", "StickinessEnabled", "StickinessLBCookieDuration", "StickinessType",
        "UnhealthyThresholdCount",
    },
    "aws:autoscaling:trigger": {
        "BreachDuration", "LowerBreachScaleIncrement", "LowerThreshold", "MeasureName", "Period", "EvaluationPeriods",
        "Statistic", "Unit", "UpperBreachScaleIncrement", "UpperThreshold",
    },
    "aws:elasticbeanstalk:command": {"DeploymentPolicy", "Timeout", "BatchSizeType", "BatchSize", "IgnoreHealthCheck"},
}
# MeasureName values from the same page; TargetResponseTime is the application load balancer's latency.
MEASURES = {"CPUUtilization", "NetworkIn", "NetworkOut", "DiskWriteOps", "DiskReadBytes", "DiskReadOps", "DiskWriteBytes",
            "Latency", "RequestCount", "HealthyHostCount", "UnhealthyHostCount", "TargetResponseTime"}
SECRET = "render-test-secret-Zq81"


def settings(single=False, **environ):
    config = parse_config({"train": {"labels_column": "y"}, "mlflow": {"model_name": "churn-model"}})
    return settings_from(config, {"API_TOKEN": SECRET, "AWS_DEFAULT_REGION": "eu-west-1", **environ}, single=single)


@pytest.fixture(scope="module")
def rendered():
    return {f.path: f for f in render(REPO, settings())}


def test_every_template_is_rendered_with_nothing_left_over(rendered):
    templates = {p.relative_to(REPO / "deploy" / "eb").as_posix() for p in (REPO / "deploy" / "eb").rglob("*") if p.is_file()}
    assert set(rendered) == templates | {copy for copies in HOOK_COPIES.values() for copy in copies}
    for item in rendered.values():
        assert "{{" not in item.text and "}}" not in item.text, item.path
        assert "\r" not in item.text and item.text.endswith("\n"), f"{item.path}: LF line endings"
        assert SECRET not in item.text, f"{item.path} holds the token"
        assert "Rendered by `invoke deploy-eb`" in item.text


def test_option_files_parse_and_use_only_documented_options(rendered):
    configs = [item for path, item in rendered.items() if path.startswith(".ebextensions/")]
    assert len(configs) == 2
    for item in configs:
        document = yaml.safe_load(item.text)
        assert set(document) == {"option_settings"}, item.path
        for namespace, options in document["option_settings"].items():
            assert namespace in ALLOWED_OPTIONS, f"{item.path}: unknown namespace {namespace}"
            allowed = ALLOWED_OPTIONS[namespace]
            assert allowed is None or set(options) <= allowed, f"{item.path}: {set(options) - allowed}"
            assert all(isinstance(value, str) for value in options.values()), "values are strings, as EB stores them"
    environment = yaml.safe_load(rendered[".ebextensions/01-environment.config"].text)["option_settings"]
    properties = environment["aws:elasticbeanstalk:application:environment"]
    assert properties == {
        "MODEL_NAME": "churn-model", "MODEL_ALIAS": "production", "MLFLOW_DISABLE_TELEMETRY": "true", "PORT": "8000",
        "WEB_CONCURRENCY": "2", "MODEL_REFRESH_INTERVAL": "60", "MLFLOW_TRACKING_URI": "sqlite:///database.db",
    }
    assert environment["aws:elasticbeanstalk:environment:process:default"]["HealthCheckPath"] == "/health/ready"
    trigger = yaml.safe_load(rendered[SCALING].text)["option_settings"]["aws:autoscaling:trigger"]
    assert trigger["MeasureName"] in MEASURES and trigger["Unit"] == "Seconds"
    assert float(trigger["LowerThreshold"]) < float(trigger["UpperThreshold"])
    assert int(trigger["BreachDuration"]) == int(trigger["Period"]) * int(trigger["EvaluationPeriods"])


def test_the_container_port_property_matches_the_dockerfile(rendered):
    properties = yaml.safe_load(rendered[".ebextensions/01-environment.config"].text)["option_settings"]
    port = properties["aws:elasticbeanstalk:application:environment"]["PORT"]
    assert f"EXPOSE {port}" in (REPO / "Dockerfile").read_text()


def test_single_instance_leaves_out_latency_scaling():
    paths = {f.path for f in render(REPO, settings(single=True))}
    assert SCALING not in paths and ".ebextensions/01-environment.config" in paths


def test_secrets_and_tracking_servers(tmp_path):
    remote = settings(MLFLOW_TRACKING_URI="https://mlflow.example.com")
    assert not remote.baked and remote.secrets == {"API_TOKEN": SECRET}
    with_password = settings(MLFLOW_TRACKING_URI="https://user:pw@mlflow.example.com")
    text = {f.path: f.text for f in render(REPO, with_password)}[".ebextensions/01-environment.config"]
    assert "pw@" not in text and "MLFLOW_TRACKING_URI" not in text  # it travels with the secrets instead
    assert with_password.secrets["MLFLOW_TRACKING_URI"] == "https://user:pw@mlflow.example.com"
    with pytest.raises(DeployError, match="example value"):
        settings(API_TOKEN="change-me-example-token")
    with pytest.raises(DeployError, match="--app 'a_b'"):
        settings_from(parse_config({"train": {"labels_column": "y"}}), {"API_TOKEN": SECRET}, app="a_b")


def test_shell_files_are_valid_and_executable(rendered):
    scripts = [item for item in rendered.values() if item.text.startswith("#!/bin/bash")]
    assert {s.path for s in scripts} == {HOOK, *HOOK_COPIES[HOOK], ".platform/tand/tand-model-refresh"}
    for item in scripts:
        assert item.mode == 0o755
        result = subprocess.run(["bash", "-n"], input=item.text, capture_output=True, text=True)
        assert result.returncode == 0, f"{item.path}: {result.stderr}"
    assert rendered[HOOK].text == rendered[HOOK_COPIES[HOOK][0]].text


def _write(tree: Path, rendered) -> None:
    for item in rendered.values():
        path = tree / item.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(item.text)
        path.chmod(item.mode)


def test_the_hook_installs_a_timer_that_systemd_accepts(rendered, tmp_path):
    """Run the rendered hook as Elastic Beanstalk does (from the application folder), into a scratch root."""
    app_dir, root = tmp_path / "current", tmp_path / "root"
    _write(app_dir, rendered)
    calls = tmp_path / "systemctl.log"
    fake = tmp_path / "systemctl"
    fake.write_text(f'#!/bin/bash\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    result = subprocess.run(["bash", str(app_dir / HOOK)], cwd=app_dir, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "DESTDIR": str(root), "SYSTEMCTL": str(fake)})
    assert result.returncode == 0, result.stderr
    assert "model refresh scheduled (*-*-* 03:00:00 UTC)" in result.stdout
    assert calls.read_text().split("\n")[:3] == ["daemon-reload", "enable tand-model-refresh.timer", "restart tand-model-refresh.timer"]
    script = root / "usr/local/bin/tand-model-refresh"
    units = root / "etc/systemd/system"
    assert script.stat().st_mode & 0o777 == 0o755
    assert (units / "tand-model-refresh.timer").stat().st_mode & 0o777 == 0o644

    timer = configparser.ConfigParser(interpolation=None, strict=True)
    timer.read_string((units / "tand-model-refresh.timer").read_text())
    assert timer["Timer"]["OnCalendar"] == "*-*-* 03:00:00" and timer["Install"]["WantedBy"] == "timers.target"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the units were parsed as INI only")
    calendar = subprocess.run([analyze, "calendar", timer["Timer"]["OnCalendar"]], capture_output=True, text=True)
    assert calendar.returncode == 0, calendar.stderr
    # verify needs the ExecStart program to exist: point it at the installed copy.
    check = tmp_path / "verify"
    check.mkdir()
    shutil.copy(units / "tand-model-refresh.timer", check)
    service = (units / "tand-model-refresh.service").read_text().replace("/usr/local/bin/tand-model-refresh", str(script))
    (check / "tand-model-refresh.service").write_text(service)
    verified = subprocess.run([analyze, "verify", str(check / "tand-model-refresh.timer"), str(check / "tand-model-refresh.service")],
                              capture_output=True, text=True)
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
