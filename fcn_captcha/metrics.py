"""Reading metrics: sequence and character accuracy, length errors, confusions; runs merged.

Character accuracy and confusions come from the Levenshtein alignment of each read
text with its true text, so a substitution is found also when the lengths differ
(``"AB1C"`` read as ``"A81"`` has one substitution ``B -> 8`` and one deletion).
"""

from __future__ import annotations

import collections
import itertools
import math
from typing import Any, Sequence


def _distance_table(a: Sequence, b: Sequence) -> list[list[int]]:
    """Levenshtein table ``d[i][j]`` = distance of ``a[:i]`` and ``b[:j]`` (unit costs)."""
    d = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        prev = d[-1]
        for j in range(1, len(b) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
        d.append(row)
    return d


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance: fewest insertions, deletions and substitutions from a to b.

    >>> edit_distance("kitten", "sitting"), edit_distance("", "AB"), edit_distance("AB", "AB")
    (3, 2, 0)
    """
    return _distance_table(a, b)[-1][-1]


def substitutions(truth: Sequence, read: Sequence) -> list[tuple[Any, Any]]:
    """The ``(true, read)`` substitutions of one Levenshtein alignment of read against truth.

    The backtrace prefers a match or substitution, then a deletion (a true symbol not
    read), then an insertion (a symbol read that is not there).

    >>> substitutions("AB1C", "A81")
    [('B', '8')]
    >>> substitutions("O0O", "00")
    [('O', '0')]
    """
    d = _distance_table(truth, read)
    i, j, out = len(truth), len(read), []
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i][j] == d[i - 1][j - 1] + (truth[i - 1] != read[j - 1]):
            if truth[i - 1] != read[j - 1]:
                out.append((truth[i - 1], read[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and d[i][j] == d[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return out[::-1]


def shortened_run(truth: str, read: str) -> str:
    """The first run of one repeated symbol in ``truth`` that ``read`` holds shorter, when
    ``read`` is ``truth`` with runs shortened and none gone; else "" (two equal narrow
    letters side by side can merge into one spot of the maps).

    >>> shortened_run("jeiiapt", "jeiapt"), shortened_run("aaab", "ab"), shortened_run("ab", "ab")
    ('ii', 'aaa', '')
    >>> shortened_run("abc", "ac"), shortened_run("aab", "b"), shortened_run("aab", "abb")
    ('', '', '')
    """
    rt, rr = ([(k, len(list(g))) for k, g in itertools.groupby(t)] for t in (truth, read))
    if [k for k, _ in rt] != [k for k, _ in rr] or any(m > n for (_, n), (_, m) in zip(rt, rr)):
        return ""
    return next((k * n for (k, n), (_, m) in zip(rt, rr) if m < n), "")


def _text(p) -> str:
    text = getattr(p, "text", p)
    if not isinstance(text, str):
        raise ValueError(f"a prediction must be a str or a Reading, not {type(p).__name__}")
    return text


def reading_metrics(predicted: Sequence, truth: Sequence[str], top_confusions: int = 10) -> dict:
    """Metrics of read texts against true texts.

    Args:
      predicted: ``N`` read texts, as strings or :class:`~fcn_captcha.decoder.Reading`.
      truth: the ``N`` true texts.
      top_confusions: how many of the most frequent substitutions to report.

    Returns:
      A dict with

      * ``count``: N;
      * ``sequence_accuracy``: share of images read exactly;
      * ``character_accuracy``: mean over images of ``max(0, 1 - edit/len(truth))``
        (an empty truth scores 1 when read empty, else 0);
      * ``mean_edit_distance``: mean Levenshtein distance per image;
      * ``length_error_rate``: share of images read with another number of symbols;
      * ``confusions``: the ``top_confusions`` most frequent substitutions
        ``(true_symbol, read_symbol, count)``, by count descending (then by symbols),
        from the Levenshtein alignment of each image.

      With N = 0 the rates are NaN and the confusions empty.

    Raises:
      ValueError: lists of different lengths, or a prediction that is neither a string
        nor a reading.

    >>> m = reading_metrics(["AB12", "A812", "AB1"], ["AB12", "AB12", "AB12"])
    >>> m["sequence_accuracy"], m["character_accuracy"], m["length_error_rate"], m["confusions"]
    (0.3333333333333333, 0.8333333333333334, 0.3333333333333333, [('B', '8', 1)])
    """
    predicted = [_text(p) for p in predicted]
    truth = list(truth)
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions but {len(truth)} true texts")
    n = len(truth)
    if n == 0:
        nan = math.nan
        return {"count": 0, "sequence_accuracy": nan, "character_accuracy": nan, "mean_edit_distance": nan,
                "length_error_rate": nan, "confusions": []}
    exact = char = edits = length_err = 0.0
    conf: collections.Counter = collections.Counter()
    for p, t in zip(predicted, truth):
        e = edit_distance(t, p)
        exact += p == t
        edits += e
        length_err += len(p) != len(t)
        char += max(0.0, 1.0 - e / len(t)) if t else float(p == t)
        conf.update(substitutions(t, p))
    top = sorted(conf.items(), key=lambda kv: (-kv[1], kv[0]))[:top_confusions]
    return {"count": n, "sequence_accuracy": exact / n, "character_accuracy": char / n,
            "mean_edit_distance": edits / n, "length_error_rate": length_err / n,
            "confusions": [(a, b, c) for (a, b), c in top]}


def format_metrics(m: dict) -> str:
    """A short human-readable report of :func:`reading_metrics`.

    >>> print(format_metrics(reading_metrics(["AB12", "A812", "AB1"], ["AB12", "AB12", "AB12"])))
    images 3: sequence accuracy 33.33%, character accuracy 83.33%, length errors 33.33%
    confusions (true->read): B->8 x1
    """
    def pct(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"

    lines = [f"images {m.get('count', 0)}: sequence accuracy {pct(m.get('sequence_accuracy'))}, "
             f"character accuracy {pct(m.get('character_accuracy'))}, "
             f"length errors {pct(m.get('length_error_rate'))}"]
    conf = m.get("confusions") or []
    lines.append("confusions (true->read): " + (", ".join(f"{a}->{b} x{c}" for a, b, c in conf) if conf else "none"))
    return "\n".join(lines)
