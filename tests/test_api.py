"""The public API: every name in ``fcn_captcha.__all__`` imports, and nothing else is promised."""

import importlib

import pytest

import fcn_captcha


@pytest.mark.parametrize("name", fcn_captcha.__all__)
def test_public_name_imports(name):
    obj = getattr(fcn_captcha, name)
    assert obj is not None
    # the lazy table points at the module that really defines (or re-exports) it
    assert getattr(importlib.import_module(fcn_captcha._EXPORTS[name]), name) is obj


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        fcn_captcha.no_such_name  # noqa: B018


def test_light_modules_do_not_import_jax():
    import subprocess
    import sys

    code = "import sys, fcn_captcha.dataset, fcn_captcha.generator; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
