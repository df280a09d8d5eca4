"""The generic prior: a shipped detector of characters in general, moved onto a scheme.

:func:`fcn_captcha.fitting.fit` learns a scheme's centers from its strings
(:mod:`fcn_captcha.weak`). Starting from a random network, it must first discover
what a character is from the scheme's images alone, which few labels or a short
budget do not allow. The shipped ``generic`` models (``wide`` network) and
``generic-cpu`` (``cpu`` network) were trained on :class:`~fcn_captcha.broad.BroadGenerator`
captchas of 62 symbols (0-9, A-Z, a-z; :func:`fcn_captcha.config.generic`), so they
already find and name characters in most schemes. This module moves one onto a scheme:

* :func:`transfer`: the scheme's network (its own alphabet, the prior's architecture)
  with every convolution copied from the prior, and each head map copied from the
  prior's map of the same symbol (a symbol the prior does not know keeps its fresh,
  near-zero initialisation);
* :func:`prior_centers`: initial centers of labelled images by forced alignment
  (:func:`fcn_captcha.annotate.annotate_maps`) on the prior's maps, where a symbol
  whose other case is not in the scheme's alphabet takes the stronger of its two
  case maps (a scheme of upper-case letters drawn in a font whose ``O`` looks like the
  prior's ``o`` still aligns), then each center's row from the ink
  (:func:`fcn_captcha.weak.ink_rows`, as the EM rounds do);
* :func:`start_for`: the network and initial centers `fit`'s trainings start from (the
  prior with its alignment or with the ink profile's centers, or a fresh network and the
  ink profile where none ships); each shipped prior is read from disk once per process.
"""

from __future__ import annotations

import functools

import numpy as np

from fcn_captcha.config import Config
from fcn_captcha.dataset import Dataset, pad_centers
from fcn_captcha.model import CenterNet, build_model

__all__ = ["PRIOR_BY_ARCH", "check_prior_loss", "load_prior", "transfer", "prior_centers", "start_for"]

#: The shipped prior of each architecture preset (fcn_captcha/pretrained/<name>).
PRIOR_BY_ARCH = {"wide": "generic", "cpu": "generic-cpu"}


@functools.lru_cache(maxsize=len(PRIOR_BY_ARCH))
def _load_shipped(name: str):
    """A shipped prior, read once per process (:func:`transfer` and :func:`prior_centers` do
    not change it)."""
    from fcn_captcha.card import PRETRAINED_DIR
    from fcn_captcha.checkpoint import load_model

    if not (PRETRAINED_DIR / name / "model.json").exists():
        return None
    model, pcfg, _, _ = load_model(PRETRAINED_DIR / name)
    return model, pcfg


def check_prior_loss(arch: str, loss: str) -> None:
    """Refuse a run of ``loss`` that would start from the shipped prior of ``arch`` trained with another.

    The priors are MSE networks (maps on the targets' 0..1 scale); under the focal loss
    the same outputs pass through a sigmoid, and `fit` from a prior measured 0% on
    wheezy and kaggle_v2 (one H100, benchmarks/RESULTS.md). Reads the card only.

    Raises:
      ValueError: the prior of ``arch`` was trained with another loss (names both and
        the way out).
    """
    from fcn_captcha.card import PRETRAINED_DIR, card_config, read_model_meta

    name = PRIOR_BY_ARCH.get(arch)
    where = PRETRAINED_DIR / name if name else None
    if where is None or not (where / "model.json").exists():
        return
    trained = card_config(read_model_meta(where), where / "model.json").loss
    if trained != loss:
        raise ValueError(f"loss {loss!r}: the shipped prior of the {arch!r} network ({name}) was trained with the "
                         f"{trained!r} loss, which a {loss!r} run cannot start from; start from a fresh network "
                         "(fit --no-prior) or keep the prior's loss")


def load_prior(config: Config):
    """The shipped prior for ``config``'s architecture, or None.

    Returns:
      ``(model, prior_config)`` or None when no prior of that architecture ships.
    """
    name = PRIOR_BY_ARCH.get(config.arch)
    prior = _load_shipped(name) if name is not None else None
    if prior is None or prior[1].arch_spec != config.arch_spec:
        return None
    return prior


def start_for(config: Config, ds: Dataset, use_prior: bool = True,
              centers: str = "prior") -> tuple[CenterNet, np.ndarray, dict]:
    """The network and initial centers that `fit`'s trainings on ``ds`` start from.

    With ``use_prior`` and a prior for the network (:func:`load_prior`): the transferred
    prior and, with ``centers="prior"``, its alignment of the labels
    (:func:`prior_centers`), or with ``centers="ink"`` the ink profile's centers
    (:func:`fcn_captcha.weak.initial_centers`: the prior's features without its
    alignment, which takes touching characters for one); otherwise a fresh network and
    the ink profile.

    Returns:
      ``(model, centers [N, L, 2], record)``; ``record`` says which start, for the report.

    Raises:
      ValueError: ``centers`` is neither "prior" nor "ink".
    """
    from fcn_captcha.weak import initial_centers

    if centers not in ("prior", "ink"):
        raise ValueError(f"centers={centers!r}: give 'prior' or 'ink'")
    prior = load_prior(config) if use_prior else None
    if prior is None:
        why = "no prior asked for" if not use_prior else f"no prior ships for the {config.arch!r} network"
        return (build_model(config, seed=config.seed), initial_centers(ds),
                {"from": "ink profile", "arch": config.arch, "why": why})
    model, known = transfer(prior[0], prior[1], config, seed=config.seed)
    rec = {"arch": config.arch, "symbols_known": known,
           "symbols_new": "".join(c for c in config.alphabet if c not in known)}
    if centers == "ink":
        return model, initial_centers(ds), {"from": "generic prior, ink-profile centers", **rec}
    return model, prior_centers(prior[0], prior[1], config, ds), {"from": "generic prior", **rec}


def _symbol_index(prior_alphabet: str, alphabet: str) -> list[int]:
    """For each symbol of ``alphabet``, its index in ``prior_alphabet`` (-1: unknown)."""
    return [prior_alphabet.find(s) for s in alphabet]


def transfer(prior: CenterNet, prior_config: Config, config: Config, seed: int = 0) -> tuple[CenterNet, str]:
    """A network for ``config`` that starts from ``prior`` (see the module doc).

    Args:
      prior: the prior network.
      prior_config: its config (alphabet, architecture).
      config: the scheme's config (same architecture).
      seed: initialisation of the head maps of symbols the prior does not know.

    Returns:
      ``(model, known)``: the network and the symbols whose head maps came from the prior.

    Raises:
      ValueError: the architectures or the losses differ (names both).
    """
    if prior_config.arch_spec != config.arch_spec:
        raise ValueError(f"prior architecture {prior_config.arch_spec!r} differs from {config.arch_spec!r}")
    if prior_config.loss != config.loss:
        raise ValueError(f"the prior was trained with the {prior_config.loss!r} loss, this run has {config.loss!r}: "
                         "it cannot start from the prior (see check_prior_loss)")
    model = build_model(config, seed=seed)
    for dst, src in zip(model.convs, prior.convs):
        dst.kernel.value = src.kernel.value
        dst.bias.value = src.bias.value
    idx = _symbol_index(prior_config.alphabet, config.alphabet)
    k, b = np.array(model.head.kernel.value), np.array(model.head.bias.value)
    pk, pb = np.asarray(prior.head.kernel.value), np.asarray(prior.head.bias.value)
    for i, j in enumerate(idx):
        if j >= 0:
            k[..., i], b[i] = pk[..., j], pb[j]
    model.head.kernel.value = k.astype(np.float32)
    model.head.bias.value = b.astype(np.float32)
    return model, "".join(s for s, j in zip(config.alphabet, idx) if j >= 0)


def scheme_maps(prior_maps: np.ndarray, prior_alphabet: str, alphabet: str) -> np.ndarray:
    """The prior's maps ``[N, h, w, Kp]`` as the scheme's ``[N, h, w, K]``.

    A symbol takes its own map, or the stronger of its two case maps when its other
    case is not one of the scheme's symbols; a symbol the prior does not know gets the
    strongest of all maps (somewhere there is a character), so the alignment still
    places it between its neighbours.
    """
    out = np.empty(prior_maps.shape[:3] + (len(alphabet),), np.float32)
    anything = prior_maps.max(axis=-1)
    for i, s in enumerate(alphabet):
        j = prior_alphabet.find(s)
        other = s.swapcase()
        jo = prior_alphabet.find(other) if other != s and other not in alphabet else -1
        if j < 0 and jo < 0:
            out[..., i] = anything
        elif jo < 0:
            out[..., i] = prior_maps[..., j]
        elif j < 0:
            out[..., i] = prior_maps[..., jo]
        else:
            out[..., i] = np.maximum(prior_maps[..., j], prior_maps[..., jo])
    return out


def prior_centers(prior: CenterNet, prior_config: Config, config: Config, ds: Dataset,
                  threshold: float = 0.3) -> np.ndarray:
    """Initial centers ``[N, L, 2]`` (model-input pixels, NaN-padded) of ``ds`` from the prior.

    Args:
      prior: the prior network.
      prior_config: its config.
      config: the scheme's config (alphabet, decoder settings).
      ds: the scheme's model-input images and labels.
      threshold: the free reading's threshold (only used for the annotations' flags,
        which are not kept here).
    """
    from fcn_captcha.annotate import annotate_maps
    from fcn_captcha.detector import Detector
    from fcn_captcha.weak import set_ink_rows

    det = Detector(prior, prior_config.replace(width=config.width, height=config.height), threshold)
    maps = scheme_maps(det.center_maps(ds.images), prior_config.alphabet, config.alphabet)
    anns = annotate_maps(maps, ds.texts, ds.names, config, threshold, 0.0)
    return pad_centers(set_ink_rows(anns, ds.images), max(config.max_length, max(map(len, ds.texts), default=1)))
