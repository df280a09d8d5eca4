"""Tests of fcn_captcha.style: the schema's JSON round trip and its validation."""

from __future__ import annotations

import json

import pytest

from fcn_captcha.style import KAGGLE_STYLE, Style


def test_style_round_trip_and_errors():
    d = KAGGLE_STYLE.to_dict()
    assert Style.from_dict(json.loads(json.dumps(d))) == KAGGLE_STYLE
    assert hash(Style.from_dict(d)) == hash(KAGGLE_STYLE)
    assert all(not isinstance(v, tuple) for v in d.values())
    custom = KAGGLE_STYLE.replace(fonts=("droid", "aileron"), pitch=(18.0, 19.0), dark_text=False)
    assert Style.from_dict(json.loads(json.dumps(custom.to_dict()))) == custom
    with pytest.raises(ValueError, match="bogus.*colour|colour.*bogus"):
        Style.from_dict({**d, "bogus": 1, "colour": 2})
    with pytest.raises(ValueError, match="font_size"):
        Style(font_size=(40.0, 30.0))
    with pytest.raises(ValueError, match="line_prob"):
        Style(line_prob=1.5)
