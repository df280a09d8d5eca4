"""How well O and 0 of the plain `captcha` library can be told apart: a bound for lib36x4 (issue 15).

Almost every error of the lib36x4 readers is O<->0 (DroidSansMono's zero has no dot or
slash, and the library warps each character at random). This measures how separable the
two are with everything a reader can know: the generator's exact centers, a crop around
each O or 0 as large as the `wide` network's receptive field (64 x 64 px, neighbours
included, as the network sees them), and a dedicated classifier trained on fresh crops.
Its accuracy on crops of other images, as the training set grows, estimates the share a
perfect reader could get right; the shipped `lib36x4` model's accuracy on the same O and
0 characters (read in their whole images) is printed beside it.

    python benchmarks/bench_o0_bound.py --images 24000 --test-images 4000 --steps 4000
    # on a GPU, a classifier trained for long enough: --steps 30000 --batch 256 --widths 32 64 128 128

Texts are 4 symbols of 0-9A-Z where each position is O or 0 with probability 1/2 (so that
crops are plentiful), otherwise one of the other 34; drawn by the library itself
(:class:`fcn_captcha.generator.CenterCaptcha`, 192x64 as the lib36x4 preset). Training
uses the first ``--images`` images (seed 1), testing ``--test-images`` others (seed 2).
The classifier is trained from scratch for ``--steps`` steps on a quarter, a half and all
of the training crops: a curve that has flattened says more crops would not help it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import time

import numpy as np

HALF = 32  # crop half-size (px): 64 x 64, the `wide` network's field is 66 px
PAIR = "O0"


def _texts(seed: int, n: int, alphabet: str) -> list[str]:
    rng = random.Random(seed)
    others = [c for c in alphabet if c not in PAIR]
    return ["".join(rng.choice(PAIR) if rng.random() < 0.5 else rng.choice(others) for _ in range(4))
            for _ in range(n)]


def _draw(args):
    """Images ``[start, stop)`` of a seed: model inputs, texts, exact centers."""
    from fcn_captcha.config import get_config
    from fcn_captcha.dataset import make_generator
    from fcn_captcha.generator import generate_one
    from fcn_captcha.preprocess import to_model_input

    seed, start, stop = args
    cfg = get_config("lib36x4")
    gen = make_generator(cfg)
    texts = _texts(seed * 1_000_003 + start, stop - start, cfg.alphabet)
    out = [generate_one(gen, cfg, seed, i, text=t) for i, t in zip(range(start, stop), texts)]
    return (np.stack([to_model_input(s.image, cfg.width, cfg.height) for s in out]), [s.text for s in out],
            np.stack([np.asarray(s.centers, np.float32) for s in out]))


def draw(seed: int, count: int, workers: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``count`` images of ``seed`` (uint8 ``[N, 64, 192]``), their texts and centers ``[N, 4, 2]``."""
    chunk = 250
    tasks = [(seed, a, min(a + chunk, count)) for a in range(0, count, chunk)]
    with mp.get_context("spawn").Pool(workers) as pool:
        parts = pool.map(_draw, tasks)
    return (np.concatenate([p[0] for p in parts]), [t for p in parts for t in p[1]],
            np.concatenate([p[2] for p in parts]))


def crops(images: np.ndarray, texts: list[str], centers: np.ndarray):
    """64 x 64 crops around each O and 0 (zero outside the image): ``(crops, is_zero, (image, position))``."""
    padded = np.pad(images, ((0, 0), (HALF, HALF), (HALF, HALF)))
    out, label, where = [], [], []
    for n, t in enumerate(texts):
        for i, c in enumerate(t):
            if c in PAIR:
                x, y = (int(round(v)) for v in centers[n, i])
                out.append(padded[n, y:y + 2 * HALF, x:x + 2 * HALF])
                label.append(c == "0")
                where.append((n, i))
    return np.stack(out), np.asarray(label, np.int32), where


WIDTHS = (16, 32, 64, 64)  #: the classifier's convolutions (a 2-core CPU trains it in minutes)


def train_classifier(x: np.ndarray, y: np.ndarray, steps: int, batch: int = 64, seed: int = 0, widths=WIDTHS):
    """A small CNN (4 3x3 conv layers, 3 pools, global mean pool, 2 logits), Adam with cosine decay.

    Returns:
      ``predict(crops uint8 [N, 64, 64]) -> int [N]`` (1: a zero).
    """
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            convs = [nnx.Conv(a, b, (3, 3), padding="SAME", rngs=rngs) for a, b in zip((1,) + widths[:-1], widths)]
            self.convs = nnx.List(convs) if hasattr(nnx, "List") else convs  # flax >= 0.12 wants nnx.List
            self.head = nnx.Linear(widths[-1], 2, rngs=rngs)

        def __call__(self, v):
            for i, c in enumerate(self.convs):
                v = jax.nn.relu(c(v))
                if i < 3:
                    v = nnx.max_pool(v, (2, 2), (2, 2))
            return self.head(v.mean(axis=(1, 2)))

    net = Net(nnx.Rngs(seed))
    graphdef, params = nnx.split(net, nnx.Param)
    tx = optax.adam(optax.cosine_decay_schedule(1e-3, steps))
    opt = tx.init(params)
    xd, yd = jnp.asarray(x), jnp.asarray(y)

    def logits(p, xb):
        return nnx.merge(graphdef, p)(xb.astype(jnp.float32)[..., None] / 255.0)

    @jax.jit
    def step(p, o, k):
        idx = jax.random.randint(k, (batch,), 0, xd.shape[0])

        def loss(p_):
            return optax.softmax_cross_entropy_with_integer_labels(logits(p_, xd[idx]), yd[idx]).mean()

        g = jax.grad(loss)(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    key = jax.random.key(seed)
    for s in range(steps):
        params, opt = step(params, opt, jax.random.fold_in(key, s))
    predict = jax.jit(lambda xb: jnp.argmax(logits(params, xb), -1))
    return lambda xs: np.concatenate([np.asarray(predict(jnp.asarray(xs[a:a + 512]))) for a in range(0, len(xs), 512)])


def reader_accuracy(images: np.ndarray, texts: list[str], where, model: str = "lib36x4") -> dict:
    """The shipped model on the whole test images: its symbol at each O/0 position.

    Position ``i`` of an image read with 4 symbols is the ``i``-th read symbol (left to right);
    a reading of another length counts every O/0 of that image wrong.
    """
    from fcn_captcha.detector import Detector

    det = Detector.load(model)
    reads = det.read_arrays(images)
    right = [len(reads[n].text) == 4 and reads[n].text[i] == texts[n][i] for n, i in where]
    return {"model": model, "characters": len(right), "accuracy": float(np.mean(right)),
            "length_4": float(np.mean([len(r.text) == 4 for r in reads]))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24000, help="training images (seed 1)")
    ap.add_argument("--test-images", type=int, default=4000, help="test images (seed 2)")
    ap.add_argument("--steps", type=int, default=4000, help="classifier steps per training size")
    ap.add_argument("--batch", type=int, default=64, help="classifier batch")
    ap.add_argument("--widths", type=int, nargs=4, default=list(WIDTHS), help="its four convolutions' widths")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--no-reader", action="store_true", help="skip the shipped model's reading")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)
    workers = args.workers or mp.cpu_count()
    t0 = time.time()
    tr_x, tr_y, _ = crops(*draw(1, args.images, workers))
    te_images, te_texts, te_centers = draw(2, args.test_images, workers)
    te_x, te_y, where = crops(te_images, te_texts, te_centers)
    print(f"{len(tr_x)} training crops, {len(te_x)} test crops ({100 * te_y.mean():.0f}% zeros), "
          f"drawn in {time.time() - t0:.0f} s")
    res = {"train_crops": len(tr_x), "test_crops": len(te_x), "steps": args.steps, "batch": args.batch,
           "widths": list(args.widths), "curve": []}
    for frac in (0.25, 0.5, 1.0):
        n = max(2, int(frac * len(tr_x)))
        t = time.time()
        predict = train_classifier(tr_x[:n], tr_y[:n], args.steps, batch=args.batch, widths=tuple(args.widths))
        acc = float((predict(te_x) == te_y).mean())
        res["curve"].append({"train_crops": n, "test_accuracy": acc, "seconds": round(time.time() - t, 1)})
        print(f"classifier on {n} crops: {100 * acc:.2f}% of {len(te_x)} test crops right ({time.time() - t:.0f} s)")
    if not args.no_reader:
        res["reader"] = reader_accuracy(te_images, te_texts, where)
        print(f"shipped lib36x4 on the same O/0 characters: {100 * res['reader']['accuracy']:.2f}%")
    res["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
