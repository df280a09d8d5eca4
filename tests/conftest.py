"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture(scope="session")
def det():
    """The shipped ``lib36x4`` detector, loaded once per test session."""
    from fcn_captcha.detector import Detector

    return Detector.load("lib36x4")
