"""Where a stage's candidates train on the devices of one host.

With one device (the default on a machine that has one, or ``config.devices=1``)
nothing here is used: :mod:`fcn_captcha.training` steps every candidate on the default
device as it always has. With ``n > 1`` devices and ``restart_mode="loop"`` each stage
is laid out by :func:`candidate_groups`:

* a stage of ``R >= n`` candidates puts candidate ``i`` on device ``i % n`` (round
  robin); each candidate's jitted step runs on its own device and, JAX dispatching
  asynchronously, the devices work side by side;
* a stage of ``R < n`` candidates (the last stage has one) gives each candidate
  ``k = n // R`` devices: its parameters and optimizer state are replicated on a
  ``jax.sharding.Mesh`` of those devices and its batch is split over them along the
  batch axis (``NamedSharding(mesh, P("batch"))``, a sharding constraint inside the
  step); XLA partitions the step and inserts the gradient all-reduce (NCCL on GPUs).

A candidate's batches come from keys derived from ``(seed, id, step)`` and JAX's
random bits do not depend on sharding (``jax_threefry_partitionable``), so the
candidates see the same batches on any device count: a round-robin stage computes what
one device computes, a data-parallel one the same up to the order of the floating-point
reduction over the batch. The training data is replicated once on every device
(:func:`replicate`) and each candidate reads it through views of those copies, never a
further copy. Checkpoints and selection see the candidates gathered on the first device
(:meth:`Placement.gather`), exactly as one device would hold them.

``restart_mode="vmap"``/``"map"`` (a stacked candidate axis in one program) spread that
axis over the devices when its length divides their number (:func:`shard_stacked`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from fcn_captcha.config import Config
from fcn_captcha.input_pipeline import DeviceData

__all__ = ["BATCH_AXIS", "local_devices", "candidate_groups", "check_batch_split", "replicate", "shard_stacked",
           "Placement"]

BATCH_AXIS = "batch"  # the mesh axis a data-parallel candidate's batch is split along


def candidate_groups(n_devices: int, n_candidates: int) -> list[list[int]]:
    """Device indices each candidate of a stage trains on.

    Args:
      n_devices: devices used, ``n >= 1``.
      n_candidates: the stage's candidates, ``R >= 1``.

    Returns:
      ``R`` lists of ``k = max(1, n // R)`` device indices: ``[i % n]`` when ``R >= n``
      (round robin), else candidate ``i`` on devices ``i k .. i k + k - 1``.

    >>> candidate_groups(4, 6)
    [[0], [1], [2], [3], [0], [1]]
    >>> candidate_groups(4, 2)
    [[0, 1], [2, 3]]
    >>> candidate_groups(4, 1)
    [[0, 1, 2, 3]]
    """
    if n_devices < 1 or n_candidates < 1:
        raise ValueError(f"need at least one device and one candidate, not {n_devices} and {n_candidates}")
    k = max(1, n_devices // n_candidates)
    return [[(i * k + j) % n_devices for j in range(k)] for i in range(n_candidates)]


def check_batch_split(config: Config, n_devices: int) -> None:
    """Raise unless every stage's batch splits evenly over the devices of one candidate.

    Raises:
      ValueError: names ``batch_size``, ``devices`` and the stage whose split fails.
    """
    if config.restart_mode != "loop":
        return
    for stage, runs in enumerate(config.stage_runs, 1):
        k = len(candidate_groups(n_devices, runs)[0])
        if config.batch_size % k:
            raise ValueError(
                f"config field batch_size={config.batch_size} does not split over the {k} devices that each of "
                f"stage {stage}'s {runs} candidate(s) trains on (config field devices={config.devices}: "
                f"{n_devices} devices); make batch_size a multiple of {k} or set devices to fewer")


def local_devices(config: Config) -> list[jax.Device]:
    """The devices a run of ``config`` trains on: the first ``config.devices`` (0: all) of this host.

    Raises:
      ValueError: ``config.devices`` is more than this host has, or the batch does not
        split (:func:`check_batch_split`); both name the config field.
    """
    available = jax.local_devices()
    n = config.devices or len(available)
    if n > len(available):
        raise ValueError(f"config field devices={config.devices} asks for more devices than the "
                         f"{len(available)} {available[0].platform} device(s) this host has")
    check_batch_split(config, n)
    return available[:n]


def replicate(tree, devices: list[jax.Device]):
    """``tree`` with a full copy of every array on each of ``devices`` (a no-op if it is already)."""
    return jax.device_put(tree, NamedSharding(Mesh(np.array(devices), (BATCH_AXIS,)), PartitionSpec()))


def shard_stacked(tree, devices: list[jax.Device], n: int):
    """Spread a stacked candidate axis of length ``n`` over ``devices`` when it divides evenly.

    The "vmap" and "map" restart modes' layout; ``tree`` is returned as it is otherwise.
    """
    if len(devices) <= 1 or n % len(devices):
        return tree
    mesh = Mesh(np.array(devices), ("r",))
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec("r")))


def _view(a: jax.Array, group: list[jax.Device]) -> jax.Array:
    """The copies on ``group`` of an array replicated over a superset of it, as one array (no copy)."""
    shards = {s.device: s.data for s in a.addressable_shards}
    if len(group) == 1:
        return shards[group[0]]
    mesh = Mesh(np.array(group), (BATCH_AXIS,))
    return jax.make_array_from_single_device_arrays(a.shape, NamedSharding(mesh, PartitionSpec()),
                                                    [shards[d] for d in group])


class Placement:
    """One stage's layout of ``R`` candidates on ``n`` devices ("loop" mode).

    Args:
      devices: the run's devices (:func:`local_devices`).
      n_candidates: the stage's candidates ``R``.
      data: the stage's training data; replicated on ``devices`` (:func:`replicate`) if
        it is not already (pass the replicated copy along to avoid copying it again).

    Attributes:
      groups: the devices of each candidate (:func:`candidate_groups`).
      data: each candidate's view of the training data, on its devices.
      batch: each candidate's batch sharding: None on one device, else
        ``NamedSharding(mesh of its devices, P("batch"))`` for the step's ``[B, ...]`` batch.
      param_shardings: where each candidate's parameters and optimizer state live (one
        device, or replicated on its mesh).
    """

    def __init__(self, devices: list[jax.Device], n_candidates: int, data: DeviceData):
        self.devices = list(devices)
        self.groups = [[self.devices[j] for j in g] for g in candidate_groups(len(devices), n_candidates)]
        data = replicate(data, self.devices)
        self.data = [jax.tree.map(functools.partial(_view, group=g), data) for g in self.groups]
        self.batch, self.param_shardings = [], []
        self._copies: dict = {}
        for g in self.groups:
            if len(g) == 1:
                self.batch.append(None)
                self.param_shardings.append(SingleDeviceSharding(g[0]))
            else:
                mesh = Mesh(np.array(g), (BATCH_AXIS,))
                self.batch.append(NamedSharding(mesh, PartitionSpec(BATCH_AXIS)))
                self.param_shardings.append(NamedSharding(mesh, PartitionSpec()))

    @property
    def devices_used(self) -> int:
        """How many devices the stage keeps busy."""
        return len({d for g in self.groups for d in g})

    def put(self, i: int, tree):
        """``tree`` (e.g. a teacher's parameters) on candidate ``i``'s devices, copied once; None stays None."""
        if tree is None:
            return None
        key = (i, id(tree))
        if key not in self._copies:
            self._copies[key] = (tree, jax.device_put(tree, self.param_shardings[i]))  # tree kept: id stays unique
        return self._copies[key][1]

    def scatter(self, cands: list) -> list:
        """Each candidate's ``(params, opt_state)`` (stacked ``[1, ...]``) moved to its devices."""
        return [jax.device_put(c, s) for c, s in zip(cands, self.param_shardings)]

    def gather(self, cands: list):
        """``(params, opt_state)`` stacked ``[R, ...]`` on the first device (what one device would hold)."""
        first = self.devices[0]
        return jax.tree.map(lambda *a: jnp.concatenate([jax.device_put(x, first) for x in a]), *cands)
