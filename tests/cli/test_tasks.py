"""The task layer documents itself: every task has an `invoke --list` line and every flag a help text."""

import subprocess

import pytest
from invoke import Collection, task

import tasks
from conftest import INVOKE, REPO


def undocumented(namespace: Collection) -> list[str]:
    """'task --flag' for every flag of every task that has no help text (invoke --help TASK would show none)."""
    missing = []
    for name in namespace.task_names:
        for argument in namespace[name].get_arguments():
            if not (argument.help or "").strip():
                missing.append(f"{name} --{argument.name.replace('_', '-')}")
    return missing


def test_invoke_list_documents_every_task():
    done = subprocess.run([*INVOKE, "--list"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0]: line for line in done.stdout.splitlines()[2:] if line.strip() and not line.startswith("    ")}
    for name in tasks.ns.task_names:
        assert name in listed, f"{name} missing from invoke --list"
        assert len(listed[name].split()) > 1, f"{name} has no docstring line"


def test_every_flag_of_every_task_has_help():
    assert undocumented(tasks.ns) == []


def test_the_help_check_catches_a_flag_without_help():
    @task(help={"documented": "Has help."})
    def example(c, documented=False, forgotten=None):
        """An example task."""

    assert undocumented(Collection(example)) == ["example --forgotten"]


@pytest.mark.parametrize("name", ["train", "serve", "promote"])
def test_invoke_help_shows_each_flag_with_its_text(name):
    done = subprocess.run([*INVOKE, "--help", name], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    for flag, text in tasks.ns[name].help.items():
        assert f"--{flag}" in done.stdout and text.split()[0] in done.stdout, (name, flag)
