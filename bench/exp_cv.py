"""Recipe experiments with 5-fold cross-validation over a whole class-folder dataset (less noise than one split).

python bench/exp_cv.py DATA_DIR ARCH SIZE : frozen features of every image and its mirror image (cached under
/tmp/exp_cv), then the 5-fold CV error of a logistic head for several pooling / flip variants, and the time
the feature pass took. Numbers go to bench/RESULTS.md.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.data import DatasetError, list_images  # noqa: E402

T = TypeVar("T")


def features(paths, arch: str, size: int) -> dict[str, np.ndarray]:
    import torch  # here, not at the top: the scripts check their arguments without waiting for torch

    from snake_model.loader import load_image
    from snake_model.network import build_network
    from snake_model.preprocess import preprocess
    from snake_model.spec import ModelSpec

    with torch.inference_mode():
        net = build_network(arch, 1, pretrained=True).body.eval()
        spec = ModelSpec(labels=["x"], arch=arch, image_size=size, resize_method="squish")
        out: dict[str, list] = {"avg": [], "avgf": [], "max": [], "maxf": []}
        for s in range(0, len(paths), 32):
            x = torch.from_numpy(np.stack([preprocess(load_image(p), spec) for p in paths[s : s + 32]]))
            n = len(x)
            f = net(torch.cat([x, torch.flip(x, dims=[3])]))
            out["avg"].append(f[:n].mean((2, 3)).numpy())
            out["avgf"].append(f[n:].mean((2, 3)).numpy())
            out["max"].append(f[:n].amax((2, 3)).numpy())
            out["maxf"].append(f[n:].amax((2, 3)).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def usage(doc: str) -> str:
    """A bench script's usage text: the `python bench/...` call in its docstring (up to the colon), then the
    docstring's first paragraph."""
    paras = [" ".join(p.split()) for p in doc.strip().split("\n\n")]
    call = next((p.split(":")[0].strip() for p in paras if p.startswith("python bench/")), None)
    return (f"usage: {call}\n" if call else "") + paras[0]


def arg_error(doc: str, message: str | None = None) -> NoReturn:
    """The usage (and the message) to stderr, then exit 2."""
    print(usage(doc), file=sys.stderr)
    if message:
        print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def data_args(argv: list[str], doc: str, most: int | None = None) -> list[str]:
    """argv (the command-line arguments, DATA_DIR first) checked: with none, an option, or more than `most`
    arguments, the usage from doc goes to stderr and the script exits 2 (0 for -h / --help, usage to stdout)."""
    if argv[:1] in (["-h"], ["--help"]):
        print(usage(doc))
        raise SystemExit(0)
    if not argv:
        arg_error(doc)
    if opts := [a for a in argv if a.startswith("-")]:
        arg_error(doc, f"unknown option {opts[0]}")
    if most is not None and len(argv) > most:
        arg_error(doc, f"too many arguments: {' '.join(argv[most:])}")
    return argv


def parse_arg(doc: str, name: str, text: str, convert: Callable[[str], T], ok: Callable[[T], bool], need: str) -> T:
    """convert(text), or the usage and `NAME must be NEED` to stderr and exit 2 when it fails or is not ok."""
    try:
        value = convert(text)
    except ValueError:
        arg_error(doc, f"{name} must be {need}, not {text!r}")
    if not ok(value):
        arg_error(doc, f"{name} must be {need}, not {text!r}")
    return value


def labelled_sets(args: list[str]):
    """(folder, Dataset, labels array) for every class folder named in args; a missing one is reported and skipped.

    Every folder is listed before the first is yielded, so that one that is not a usable class-folder dataset
    stops the script with its message (exit 1) before any work."""
    sets = []
    for data in map(Path, args):
        if not data.is_dir():
            print(f"skip: {data} not found")
            continue
        try:
            ds = list_images(data)
        except DatasetError as e:
            raise SystemExit(f"error: {e}") from None
        sets.append((data, ds, np.array(ds.labels)))
    yield from sets


def cached_npz(cache: Path, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """compute() the first time, then the arrays from the .npz cache file."""
    if cache.is_file():
        return dict(np.load(cache))
    out = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def cv_scores(
    x: np.ndarray,
    y: np.ndarray,
    C: float,
    seed: int = 0,
    extra: np.ndarray | None = None,
    folds: int = 5,
    oof: np.ndarray | None = None,
) -> tuple[float, float]:
    """Stratified k-fold error and NLL of a standardised logistic head, evaluated on the rows x (N, d).

    extra (N, V, d) adds V more training rows per image (augmented views), always in their image's fold; oof, when
    given, is an (N, n_classes) array that receives the out-of-fold probabilities.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    wrong, nll = 0, 0.0
    for tr, va in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        xt, yt = x[tr], y[tr]
        if extra is not None:
            xt = np.concatenate([xt, extra[tr].reshape(-1, extra.shape[2])])
            yt = np.concatenate([yt, np.repeat(y[tr], extra.shape[1])])
        sc = StandardScaler().fit(xt)
        m = LogisticRegression(C=C, max_iter=3000).fit(sc.transform(xt), yt)
        pr = m.predict_proba(sc.transform(x[va]))
        if oof is not None:
            oof[va] = pr
        wrong += int((pr.argmax(1) != y[va]).sum())
        nll -= float(np.log(np.clip(pr[np.arange(len(va)), y[va]], 1e-12, 1)).sum())
    return wrong / len(y), nll / len(y)


def cv_error(x: np.ndarray, y: np.ndarray, C: float, seed: int = 0) -> float:
    """5-fold error of a standardised logistic head."""
    return cv_scores(x, y, C, seed)[0]


def main() -> int:
    args = data_args(sys.argv[1:], __doc__, most=3)
    if len(args) < 3:
        arg_error(__doc__, "give DATA_DIR, ARCH and SIZE")
    arch = args[1]
    size = parse_arg(__doc__, "SIZE", args[2], int, lambda v: v > 0, "a positive number of pixels")
    sets = list(labelled_sets(args[:1]))
    if not sets:
        return 0
    data, ds, y = sets[0]
    cache = Path("/tmp/exp_cv") / f"{data.name}_{arch}_{size}.npz"
    t = time.time()
    F = cached_npz(cache, lambda: features(ds.paths, arch, size))
    secs = time.time() - t
    variants = {
        "avg (no TTA)": F["avg"],
        "avg + flip TTA": (F["avg"] + F["avgf"]) / 2,
        "max + flip TTA": (F["max"] + F["maxf"]) / 2,
        "avg|max + flip TTA": np.hstack([(F["avg"] + F["avgf"]) / 2, (F["max"] + F["maxf"]) / 2]),
    }
    print(f"{data.name} {arch} {size}px: {len(y)} images, features x2 views {secs:.0f}s", flush=True)
    for name, x in variants.items():
        res = "  ".join(f"C={C}: {cv_error(x, y, C):.3f}" for C in (0.003, 0.01, 0.03))
        print(f"  {name:<20} {res}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
