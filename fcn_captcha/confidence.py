"""Confidence: the calibrated probability that a whole reading is right (NumPy only, no JAX).

A reading's peak scores are not probabilities (a raw peak reaches 1.06; an O read as a
0 can score 0.97). This module turns what the decoder saw
(:mod:`fcn_captcha.decoder`, step 6) into ``P(text is entirely right)``, fitted on a
held-out calibration set with known texts, so that a caller can ask for a new captcha
when unsure.

**Features** of one :class:`~fcn_captcha.decoder.Reading` (:func:`reading_features`),
each oriented so that larger means "more likely right":

* ``weakest``: the smallest score of the read characters (a faint character);
* ``margin``: the smallest ``score - rival`` (a character that another symbol nearly
  won: O/0, the commonest error of the shipped models);
* ``gap``: ``weakest - runner_up`` (a peak left out that was nearly as strong as one
  read: a missing or an extra character);
* ``agree``: 1.0 when the count over the threshold fitted the length range, 0.0 when
  ``length`` forced it (:attr:`~fcn_captcha.decoder.Reading.length_forced`).

An empty reading has ``weakest = margin = 0`` and ``gap = -runner_up``. Beside them,
the **symbols** read: ``q[s]``, the calibration set's rate of substitutions among the
reads of symbol ``s`` (:func:`symbol_risk`, smoothed towards the overall rate by
:data:`SYMBOL_PRIOR` pseudo-reads), is a risk that strong scores do not remove: the
shipped lib models read O as 0 (and back) with scores over 0.9 and no rival.

**Calibrators** (:class:`Calibrator`): ``p = sigmoid(bias + w . x)`` on a subset of
the features, times ``prod(1 - q[s])`` over the read symbols for the candidates "with
symbols", every weight ``>= 0`` (so ``p`` never decreases when a feature grows:
monotone), fitted by ridge-penalised maximum likelihood on Platt's smoothed targets
(right: ``(N+ + 1) / (N+ + 2)``, wrong: ``1 / (N- + 2)``, which keeps the fit finite on
a small set that it separates), and clipped to ``[1 / (N- + 2), 1 - 3 / N]``: with no
error among ``N`` readings, ``3 / N`` is the 95% upper bound of the error rate (the
rule of three), so a calibrator fitted on 160 readings never claims more than 0.981,
and one on 2,000 more than 0.9985. :func:`fit_calibrator` fits the
:data:`CANDIDATES` (the constant, Platt on one feature, logistic on all, logistic with
symbols) and keeps the one of least cross-validated log loss (:data:`FOLDS` folds; the
symbol table of a training fold is itself cross-fitted, so that the weights are not
fitted against the table's own counts). The choice is by log loss, a proper score, not
by ECE: the constant calibrator (every reading at the base rate) has an ECE of about 0
and tells no reading from another. Every candidate's cross-validated log loss and ECE
are kept in the calibrator (``cv``).

A calibrator is fitted for one decoding (the threshold and the length range it was
fitted at): :meth:`Calibrator.applies` says whether it holds for a read, and
:class:`~fcn_captcha.detector.Detector` gives ``confidence = None`` otherwise. It
serialises to a small JSON object (:meth:`Calibrator.to_dict`) stored in the model card
as ``info.confidence`` (:mod:`fcn_captcha.card`), which the exported ONNX file carries
too, so both backends compute the same confidence from the same maps.

How well it is calibrated (the ECE, reliability diagrams, the report's section) is
measured by :mod:`fcn_captcha.reliability`.

Why this module is long: the features, the symbols' risk, the calibrator with its two
ways to predict (from readings, and from the decoder's arrays for the detector's fast
path) and the fit all share the one feature contract; apart, each would restate it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fcn_captcha.metrics import substitutions
from fcn_captcha.reliability import expected_calibration_error

__all__ = [
    "CALIBRATOR_FORMAT",
    "CANDIDATES",
    "FEATURES",
    "MIN_READINGS",
    "Calibrator",
    "batch_features",
    "cross_validated_confidence",
    "fit_calibrator",
    "reading_features",
    "symbol_risk",
    "with_confidence",
]

#: Version of :meth:`Calibrator.to_dict`'s object; :meth:`Calibrator.from_dict` refuses others.
CALIBRATOR_FORMAT = 1
#: Score features of a reading (:func:`reading_features`), in this order.
FEATURES = ("weakest", "margin", "gap", "agree")
#: The calibrators :func:`fit_calibrator` chooses from: name -> (features, with the symbols' factor).
CANDIDATES = {
    "constant": ((), False),
    "platt:weakest": (("weakest",), False),
    "platt:margin": (("margin",), False),
    "platt:gap": (("gap",), False),
    "logistic": (FEATURES, False),
    "logistic*symbols": (FEATURES, True),
}
#: Cross-validation folds of :func:`fit_calibrator`.
FOLDS = 5
#: Pseudo-reads at the overall substitution rate added to each symbol's counts.
SYMBOL_PRIOR = 20.0
#: Powers ``g`` of the symbols' factor ``prod(1 - q[s]) ** g`` that a fit chooses from.
SYMBOL_POWERS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
#: Ridge penalty on the standardised weights (the bias is not penalised).
RIDGE = 1.0
#: Fewest calibration readings a calibrator is fitted on (fewer are refused).
MIN_READINGS = 20


# ----- features ---------------------------------------------------------------------------------
def reading_features(reading) -> np.ndarray:
    """The :data:`FEATURES` of one reading (see the module doc).

    Args:
      reading: a :class:`~fcn_captcha.decoder.Reading`.

    Returns:
      float64 ``[4]``: weakest, margin, gap, agree.

    >>> from fcn_captcha.decoder import Char, Reading
    >>> r = Reading("0A", (Char("0", 4, 8, 0.9, 0.7), Char("A", 20, 8, 0.8, 0.1)), runner_up=0.3)
    >>> reading_features(r).round(3).tolist()
    [0.8, 0.2, 0.5, 1.0]
    """
    scores = np.array([c.score for c in reading.chars], np.float64)
    rivals = np.array([c.rival for c in reading.chars], np.float64)
    weakest = float(scores.min()) if scores.size else 0.0
    margin = float((scores - rivals).min()) if scores.size else 0.0
    return np.array([weakest, margin, weakest - float(reading.runner_up), 0.0 if reading.length_forced else 1.0])


def batch_features(score: np.ndarray, rival: np.ndarray, valid: np.ndarray, runner_up: np.ndarray,
                   length_forced: np.ndarray) -> np.ndarray:
    """:func:`reading_features` of a whole batch, from the decoder's fixed-size arrays.

    The same float64 values as stacking :func:`reading_features` of each reading
    (the minima are exact, the differences the same float64 operations), without a
    Python loop: what :class:`~fcn_captcha.detector.Detector` computes on
    :func:`fcn_captcha.device_decoder.decode_device`'s outputs.

    Args:
      score: float ``[B, M]`` peak values (:attr:`Char.score <fcn_captcha.decoder.Char.score>`).
      rival: float ``[B, M]``, :attr:`Char.rival <fcn_captcha.decoder.Char.rival>`.
      valid: bool ``[B, M]``, True for the read characters.
      runner_up: float ``[B]``, :attr:`Reading.runner_up <fcn_captcha.decoder.Reading.runner_up>`.
      length_forced: bool ``[B]``.

    Returns:
      float64 ``[B, 4]``: weakest, margin, gap, agree.

    >>> batch_features(np.array([[0.9, 0.8, 0.0]]), np.array([[0.7, 0.1, 0.0]]),
    ...                np.array([[True, True, False]]), np.array([0.3]), np.array([False])).round(3).tolist()
    [[0.8, 0.2, 0.5, 1.0]]
    """
    valid = np.asarray(valid, bool)
    score = np.asarray(score, np.float64)
    any_read = valid.any(axis=1)
    weakest = np.where(any_read, np.min(np.where(valid, score, np.inf), axis=1, initial=np.inf), 0.0)
    diff = score - np.asarray(rival, np.float64)
    margin = np.where(any_read, np.min(np.where(valid, diff, np.inf), axis=1, initial=np.inf), 0.0)
    gap = weakest - np.asarray(runner_up, np.float64)
    agree = np.where(np.asarray(length_forced, bool), 0.0, 1.0)
    return np.stack([weakest, margin, gap, agree], axis=1).reshape(-1, len(FEATURES))


def symbol_risk(texts: Sequence[str], truths: Sequence[str], prior: float = SYMBOL_PRIOR) -> dict[str, float]:
    """Each read symbol's smoothed substitution rate ``q[s]`` (and ``""``: the overall rate).

    Substitutions come from the Levenshtein alignment of each read text with its truth
    (:func:`fcn_captcha.metrics.substitutions`); ``q[s] = (e_s + prior * q0) / (n_s + prior)``
    with ``n_s`` reads of ``s``, ``e_s`` of them substitutions, and
    ``q0 = (sum e + 1) / (sum n + 2)``.

    >>> q = symbol_risk(["0A", "0B", "AB"], ["OA", "0B", "AB"], prior=2.0)
    >>> round(q[""], 3), round(q["0"], 3), round(q["A"], 3)
    (0.25, 0.375, 0.125)
    """
    n: dict[str, int] = {}
    e: dict[str, int] = {}
    for t, s in zip(texts, truths):
        for c in t:
            n[c] = n.get(c, 0) + 1
        for _, c in substitutions(s, t):
            e[c] = e.get(c, 0) + 1
    q0 = (sum(e.values()) + 1.0) / (sum(n.values()) + 2.0)
    return {"": q0} | {s: (e.get(s, 0) + prior * q0) / (k + prior) for s, k in sorted(n.items())}


def _symbols_factor(texts: Sequence[str], risk: dict[str, float]) -> np.ndarray:
    """``prod(1 - q[s])`` over each text's symbols, float64 ``[N]`` (unknown symbols: the overall rate)."""
    q0 = risk[""]
    logs: dict[str, float] = {}  # log1p(-q[c]) once per symbol: the same values, summed in the same order
    for c in set().union(*texts):
        logs[c] = math.log1p(-risk.get(c, q0))
    # np.exp, not math.exp: the same function as Calibrator.predict_arrays, so both give equal bits
    return np.exp(np.array([sum(logs[c] for c in t) for t in texts], np.float64))


# ----- logistic fit ------------------------------------------------------------------------------
def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _fit_logistic(x: np.ndarray, y: np.ndarray, factor: np.ndarray | None = None,
                  ridge: float = RIDGE) -> tuple[np.ndarray, float]:
    """Weights ``>= 0`` and bias of ``p = factor * sigmoid(b + x w)`` on Platt's targets (raw feature units).

    Fisher scoring (Newton's method when ``factor`` is 1) with a backtracking line
    search, on the standardised features; a feature whose weight comes out negative is
    dropped (weight 0) and the rest refitted, until none is.

    Args:
      x: float64 ``[N, d]`` features.
      y: bool ``[N]``, right or not.
      factor: float64 ``[N]`` in ``(0, 1]``, a fixed factor of each probability (None: 1).
      ridge: penalty on the standardised weights.
    """
    n, d = x.shape
    m = np.ones(n) if factor is None else np.asarray(factor, np.float64)
    n_pos = float(y.sum())
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1.0 / (n - n_pos + 2))
    mean, std = x.mean(axis=0), x.std(axis=0)
    active = [j for j in range(d) if std[j] > 1e-12]
    while True:
        a = np.concatenate([np.ones((n, 1)), (x[:, active] - mean[active]) / std[active]], axis=1)
        beta = np.zeros(len(active) + 1)
        t0 = min(t.mean() / m.mean(), 1 - 1e-6)
        beta[0] = math.log(t0 / (1 - t0))
        pen = np.full(len(active) + 1, ridge)
        pen[0] = 0.0

        def loss(b, a=a, pen=pen):
            p = np.clip(m * _sigmoid(a @ b), 1e-15, 1 - 1e-15)
            return -np.sum(t * np.log(p) + (1 - t) * np.log(1 - p)) + 0.5 * np.sum(pen * b * b)

        for _ in range(100):
            sg = _sigmoid(a @ beta)
            p = np.clip(m * sg, 1e-15, 1 - 1e-15)
            dz = (p - t) * (1 - sg) / (1 - p)  # dL/dz; p - t when factor is 1
            fisher = (m * sg * (1 - sg)) ** 2 / (p * (1 - p))
            g = a.T @ dz + pen * beta
            h = a.T @ (a * fisher[:, None]) + np.diag(pen) + 1e-9 * np.eye(len(beta))
            step = np.linalg.solve(h, g)
            f0, s = loss(beta), 1.0
            while loss(beta - s * step) > f0 and s > 1e-6:
                s /= 2
            beta = beta - s * step
            if np.max(np.abs(s * step)) < 1e-9:
                break
        w = beta[1:]
        if not active or w.min() >= 0:
            break
        active.pop(int(np.argmin(w)))
    weights = np.zeros(d)
    if active:
        weights[active] = w / std[active]
    bias = float(beta[0] - np.sum(w * mean[active] / std[active])) if active else float(beta[0])
    return weights, bias


# ----- the calibrator ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Calibrator:
    """Readings -> the calibrated probability that each is entirely right.

    Attributes:
      kind: the candidate's name (a key of :data:`CANDIDATES`).
      features: the features it uses (of :data:`FEATURES`), in ``weights`` order.
      weights: one weight ``>= 0`` per feature (raw feature units).
      bias: the logit's constant.
      bounds: ``(lo, hi)``, the probabilities it clips to (see the module doc).
      threshold: the decoder threshold it was fitted at.
      length: the length range it was fitted at (``(lo, hi)``), or None (free).
      risk: ``q[s]`` of :func:`symbol_risk` (``""``: the overall rate) for a
        calibrator with the symbols' factor, else None.
      count: calibration readings; correct: how many of them were right.
      fitted_on: what they were (a person's words: the folder, seed or split).
      cv: each candidate's cross-validated ``{"log_loss", "ece"}``.
    """

    kind: str
    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    bounds: tuple[float, float]
    threshold: float
    length: tuple[int, int] | None = None
    risk: dict[str, float] | None = None
    count: int = 0
    correct: int = 0
    fitted_on: str = ""
    cv: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    def predict(self, readings: Sequence, features: np.ndarray | None = None) -> np.ndarray:
        """float64 ``[N]`` probabilities in ``[bounds]`` of ``N`` readings (readings with ``error``: 0.0).

        Args:
          readings: ``N`` readings.
          features: float64 ``[N, 4]``, their :func:`reading_features` when the caller
            has them already (:func:`batch_features`); None: computed here.
        """
        if features is None:
            base = np.array([reading_features(r) for r in readings], np.float64).reshape(-1, len(FEATURES))
        else:
            base = np.asarray(features, np.float64).reshape(-1, len(FEATURES))
            if len(base) != len(readings):
                raise ValueError(f"features of {len(base)} readings for {len(readings)} readings")
        p = self._logistic(base)
        if self.risk:
            p = p * _symbols_factor([r.text for r in readings], self.risk)
        p = np.clip(p, *self.bounds)
        return np.where([bool(r.error) for r in readings], 0.0, p) if len(readings) else p

    def predict_arrays(self, symbol: np.ndarray, valid: np.ndarray, features: np.ndarray,
                       alphabet: str) -> np.ndarray:
        """:meth:`predict` from the decoder's arrays, bit for bit, without Reading objects.

        Args: ``symbol`` int ``[B, M]`` indices into ``alphabet``; ``valid`` bool ``[B, M]``,
        the read characters (in reading order along a row); ``features`` float64 ``[B, 4]``
        (:func:`batch_features`). Returns float64 ``[B]`` (rows of non-finite maps: the
        caller's to mask). The log-factors are added column by column, as
        :func:`_symbols_factor` adds them over a text.
        """
        p = self._logistic(np.asarray(features, np.float64).reshape(-1, len(FEATURES)))
        if self.risk:
            table = np.array([math.log1p(-self.risk.get(c, self.risk[""])) for c in alphabet], np.float64)
            symbol, valid, logs = np.asarray(symbol), np.asarray(valid, bool), np.zeros(len(p))
            for j in range(symbol.shape[1]):
                logs = logs + np.where(valid[:, j], table[np.clip(symbol[:, j], 0, len(table) - 1)], 0.0)
            p = p * np.exp(logs)
        return np.clip(p, *self.bounds)

    def _logistic(self, base: np.ndarray) -> np.ndarray:
        """``sigmoid(bias + w . x)`` ``[N]`` of the features ``base`` ``[N, 4]`` (before the symbols' factor)."""
        x = base[:, [FEATURES.index(f) for f in self.features]]
        return _sigmoid(self.bias + x @ np.asarray(self.weights, np.float64))

    def __call__(self, reading) -> float:
        """The probability of one reading."""
        return float(self.predict([reading])[0])

    def applies(self, threshold: float, length) -> bool:
        """Whether a read at ``threshold`` and ``length`` (None, n or ``(lo, hi)``) is the fitted decoding."""
        return math.isclose(float(threshold), self.threshold, abs_tol=1e-9) and _length_key(length) == self.length

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able object (the card's ``info.confidence``)."""
        d = dataclasses.asdict(self)
        d["features"], d["weights"], d["bounds"] = list(self.features), list(self.weights), list(self.bounds)
        d["length"] = list(self.length) if self.length else None
        return {"format": CALIBRATOR_FORMAT} | d

    @classmethod
    def from_dict(cls, d: Any) -> Calibrator:
        """The calibrator of :meth:`to_dict`'s object.

        Raises:
          ValueError: another format, or a field missing or of the wrong kind (named).
        """
        if not isinstance(d, dict):
            raise ValueError(f"a confidence calibrator must be a JSON object, not {type(d).__name__}")
        if d.get("format") != CALIBRATOR_FORMAT:
            raise ValueError(f"confidence calibrator format {d.get('format')!r} is not {CALIBRATOR_FORMAT}")
        try:
            features = tuple(str(f) for f in d["features"])
            weights = tuple(float(w) for w in d["weights"])
            lo, hi = (float(b) for b in d["bounds"])
            out = cls(kind=str(d["kind"]), features=features, weights=weights, bias=float(d["bias"]),
                      bounds=(lo, hi), threshold=float(d["threshold"]),
                      length=tuple(int(v) for v in d["length"]) if d.get("length") else None,
                      risk={str(k): float(v) for k, v in d["risk"].items()} if d.get("risk") else None,
                      count=int(d.get("count", 0)), correct=int(d.get("correct", 0)),
                      fitted_on=str(d.get("fitted_on", "")), cv=dict(d.get("cv") or {}))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"confidence calibrator: a missing or bad field ({type(e).__name__}: {e})") from None
        bad = [f for f in features if f not in FEATURES]
        if bad or len(weights) != len(features):
            raise ValueError(f"confidence calibrator: features {list(features)} (unknown: {bad}) and "
                             f"{len(weights)} weights do not fit")
        if min(weights, default=0.0) < 0 or not all(math.isfinite(v) for v in weights + (out.bias,)):
            raise ValueError(f"confidence calibrator: weights {list(weights)} must be finite and >= 0 (monotone)")
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"confidence calibrator: bounds {[lo, hi]} must lie in [0, 1]")
        if out.risk is not None and ("" not in out.risk or not all(0 <= q < 1 for q in out.risk.values())):
            raise ValueError("confidence calibrator: 'risk' must map symbols (and '') to rates in [0, 1)")
        return out


def _length_key(length) -> tuple[int, int] | None:
    if length is None:
        return None
    if isinstance(length, (tuple, list)):
        return int(length[0]), int(length[1])
    return int(length), int(length)


def with_confidence(readings: Sequence, calibrator: Calibrator | None, features: np.ndarray | None = None) -> list:
    """The readings with ``confidence`` set by ``calibrator`` (left None without one, and on errors).

    ``features`` (float64 ``[N, 4]``, optional) are the readings' :func:`reading_features`
    when the caller has them (:func:`batch_features`), as :meth:`Calibrator.predict` takes them.
    """
    if calibrator is None or not len(readings):
        return list(readings)
    p = calibrator.predict(readings, features).tolist()
    return [r if r.error else type(r)(r.text, r.chars, r.length_forced, r.error, r.runner_up, q)
            for r, q in zip(readings, p)]


# ----- fitting ----------------------------------------------------------------------------------
def _folds(n: int, k: int, seed: int) -> np.ndarray:
    """Fold of each of ``n`` items, ``[n]`` in ``0..k-1`` (a seeded permutation, balanced)."""
    fold = np.empty(n, np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return fold


def _fit_one(kind: str, base: np.ndarray, texts: list[str], truths: list[str], y: np.ndarray,
             seed: int) -> tuple[tuple[float, ...], float, dict | None]:
    """Weights, bias and symbol table of candidate ``kind`` on these readings."""
    feats, symbols = CANDIDATES[kind]
    x = base[:, [FEATURES.index(f) for f in feats]]
    risk, factor = None, None
    if symbols:  # cross-fitted: each reading's factor from the other folds' counts
        inner = _folds(len(y), FOLDS, seed + 1)
        factor = np.ones(len(y))
        for f in range(FOLDS):
            tr = inner == f
            rest = ~tr
            factor[tr] = _symbols_factor([t for t, m in zip(texts, tr) if m],
                                         symbol_risk([t for t, m in zip(texts, rest) if m],
                                                     [s for s, m in zip(truths, rest) if m]))
        risk = symbol_risk(texts, truths)
    if factor is None:
        w, b = _fit_logistic(x, y)
        return tuple(float(v) for v in w), b, risk
    best = None
    for g in SYMBOL_POWERS:  # the factor's power: by the training likelihood
        w, b = _fit_logistic(x, y, factor ** g)
        p = np.clip(factor ** g * _sigmoid(b + x @ w), 1e-15, 1 - 1e-15)
        nll = -np.sum(np.where(y, np.log(p), np.log(1 - p)))
        if best is None or nll < best[0] - 1e-9:
            best = (nll, g, w, b)
    _, g, w, b = best
    risk = {k: 1.0 - (1.0 - q) ** g for k, q in risk.items()}  # prod(1 - q')  = prod(1 - q) ** g
    return tuple(float(v) for v in w), b, risk


def _bounds(y: np.ndarray) -> tuple[float, float]:
    """``(1 / (N- + 2), 1 - 3 / N)`` (see the module doc)."""
    n, pos = len(y), float(y.sum())
    return 1.0 / (n - pos + 2), max(1.0 - 3.0 / n, 1.0 / (n - pos + 2))


def fit_calibrator(readings: Sequence, truths: Sequence[str], threshold: float, length=None,
                   fitted_on: str = "", seed: int = 0, candidates: Sequence[str] | None = None) -> Calibrator:
    """Fit the calibrator of least cross-validated log loss on held-out readings.

    Args:
      readings: ``N`` :class:`~fcn_captcha.decoder.Reading` of calibration images, read
        at ``threshold`` and ``length`` (readings with ``error`` are left out).
      truths: their ``N`` true texts.
      threshold: the decoder threshold they were read at.
      length: the length range they were read at (None, n or ``(lo, hi)``).
      fitted_on: what the images were, for the card.
      seed: the folds' permutation.
      candidates: names of :data:`CANDIDATES` to try (default: all).

    Returns:
      The chosen :class:`Calibrator`, refitted on all readings; ``cv`` holds every
      candidate's cross-validated log loss and ECE.

    Raises:
      ValueError: fewer than :data:`MIN_READINGS` usable readings, or lists of different lengths.
    """
    if len(readings) != len(truths):
        raise ValueError(f"{len(readings)} readings but {len(truths)} true texts")
    keep = [i for i, r in enumerate(readings) if not r.error]
    readings, truths = [readings[i] for i in keep], [str(truths[i]) for i in keep]
    if len(readings) < MIN_READINGS:
        raise ValueError(f"a confidence calibrator needs at least {MIN_READINGS} readings, got {len(readings)}")
    texts = [r.text for r in readings]
    y = np.array([t == s for t, s in zip(texts, truths)])
    base = np.array([reading_features(r) for r in readings], np.float64)
    fold = _folds(len(y), FOLDS, seed)
    names = list(candidates or CANDIDATES)
    cv: dict[str, dict[str, float]] = {}
    for kind in names:
        p = np.zeros(len(y))
        for f in range(FOLDS):
            tr = fold != f
            w, b, risk = _fit_one(kind, base[tr], [t for t, m in zip(texts, tr) if m],
                                  [s for s, m in zip(truths, tr) if m], y[tr], seed)
            cal = Calibrator(kind, CANDIDATES[kind][0], w, b, _bounds(y[tr]), float(threshold), risk=risk)
            p[~tr] = cal.predict([r for r, m in zip(readings, ~tr) if m])
        pc = np.clip(p, 1e-6, 1 - 1e-6)
        cv[kind] = {"log_loss": float(-np.mean(np.where(y, np.log(pc), np.log(1 - pc)))),
                    "ece": expected_calibration_error(p, y)}
    best = min(names, key=lambda k: (round(cv[k]["log_loss"], 6), len(CANDIDATES[k][0]) + CANDIDATES[k][1]))
    w, b, risk = _fit_one(best, base, texts, truths, y, seed)
    return Calibrator(best, CANDIDATES[best][0], w, b, _bounds(y), float(threshold), _length_key(length), risk,
                      count=len(y), correct=int(y.sum()), fitted_on=fitted_on, cv=cv)


def cross_validated_confidence(readings: Sequence, truths: Sequence[str], threshold: float, length=None,
                               folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Out-of-fold confidences: each fold read by a calibrator fitted (choice included) on the others.

    For a set too small to split into calibration and test, this is the honest figure
    of how a calibrator fitted on such a set does on readings it has not seen.

    Returns:
      float64 ``[N]`` (readings with ``error``: 0.0).
    """
    fold = _folds(len(readings), folds, seed + 7)
    out = np.zeros(len(readings))
    for f in range(folds):
        tr = np.flatnonzero(fold != f)
        cal = fit_calibrator([readings[i] for i in tr], [truths[i] for i in tr], threshold, length, seed=seed)
        te = np.flatnonzero(fold == f)
        out[te] = cal.predict([readings[i] for i in te])
    return out
