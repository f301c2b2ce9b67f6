"""Shared fixtures for Cairn's integration tests.

Tests run real programs from the build directory (CAIRN_BUILD, set by
test/run.py; build/ by default) and clean up every process and file they make.
"""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def build_dir():
    return pathlib.Path(os.environ.get("CAIRN_BUILD", ROOT / "build")).resolve()


@pytest.fixture(scope="session")
def root_dir():
    return ROOT
