"""One error contract: every error the package defines derives from DogbreedError, and run_cli reports them."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import dogbreed
from dogbreed.errors import ConfigError, DogbreedError, run_cli
from dogbreed.training.trainer import Interrupted

# A stop signal is how a job ends on purpose, not an error: it is caught by the training CLI, never reported.
NOT_ERRORS = {Interrupted}


def defined_exceptions() -> list[type[BaseException]]:
    found = []
    for module_info in pkgutil.walk_packages(dogbreed.__path__, prefix="dogbreed."):
        if module_info.name.endswith(".__main__"):  # running a command is all it does
            continue
        module = importlib.import_module(module_info.name)
        for _, member in inspect.getmembers(module, inspect.isclass):
            if issubclass(member, BaseException) and member.__module__ == module.__name__:
                found.append(member)
    return found


def test_every_error_the_package_defines_derives_from_one_base():
    exceptions = defined_exceptions()
    names = {exc.__name__ for exc in exceptions}
    assert {"InferenceError", "ImageDecodeError", "CloudError", "ServeError", "DataError"} <= names
    outside = [exc.__qualname__ for exc in exceptions if exc not in NOT_ERRORS and not issubclass(exc, DogbreedError)]
    assert outside == []


def test_run_cli_reports_an_error_as_one_line_and_its_exit_code(capsys):
    def fail():
        raise ConfigError("--epochs must be at least 1")

    assert run_cli("dogbreed train", fail) == 1
    assert capsys.readouterr().err == "dogbreed train: error: --epochs must be at least 1\n"


def test_run_cli_passes_an_int_result_through_and_treats_others_as_success():
    assert run_cli("prog", lambda: 3) == 3
    assert run_cli("prog", lambda: "done") == 0


def test_run_cli_keeps_the_traceback_of_a_bug():
    def bug():
        raise KeyError("oops")

    with pytest.raises(KeyError):
        run_cli("prog", bug)
