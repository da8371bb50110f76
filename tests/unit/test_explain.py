"""Kernel SHAP, superpixels, the bias metrics and the report, without a server."""

from __future__ import annotations

import base64
import io
import itertools
import json
import math
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dogbreed.errors import DataError
from dogbreed.explain import bias, kernel_shap, superpixels
from dogbreed.explain.explainer import ExplainError, Settings, explain
from dogbreed.explain.report import ImageResult, Report


def exact_shapley(m: int, value) -> np.ndarray:
    """Shapley values by their definition, over all 2**M coalitions; ``value`` maps masks (n, M) to (n, k)."""
    masks = np.array(list(itertools.product((0.0, 1.0), repeat=m)))
    values = value(masks)
    index = {tuple(row): i for i, row in enumerate(masks.astype(int))}
    phi = np.zeros((m, values.shape[1]))
    for row in masks.astype(int):
        size = int(row.sum())
        for j in np.flatnonzero(row == 0):
            with_j = row.copy()
            with_j[j] = 1
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            phi[j] += weight * (values[index[tuple(with_j)]] - values[index[tuple(row)]])
    return phi


def nonlinear_game(m: int, seed: int = 0):
    """A value function with pairwise interactions and a nonlinearity, three outputs."""
    rng = np.random.default_rng(seed)
    linear, pairs = rng.normal(size=(m, 3)), rng.normal(size=(m, m, 3))

    def value(z: np.ndarray) -> np.ndarray:
        return z @ linear + 0.3 * np.einsum("ni,nj,ijk->nk", z, z, pairs) + np.sin(z.sum(1, keepdims=True))

    return value


def kernel_values(m: int, value, samples: int, seed: int = 1) -> np.ndarray:
    coalitions = kernel_shap.coalitions(m, samples, np.random.default_rng(seed))
    return kernel_shap.fit(coalitions, value(coalitions.masks), value(np.ones((1, m)))[0], value(np.zeros((1, m)))[0])


def test_with_every_coalition_kernel_shap_gives_the_exact_shapley_values():
    value = nonlinear_game(6)
    coalitions = kernel_shap.coalitions(6, 62, np.random.default_rng(0))
    assert len(coalitions) == 62 == len({c.tobytes() for c in coalitions.masks})
    assert np.abs(kernel_values(6, value, 62) - exact_shapley(6, value)).max() < 1e-9


def test_sampled_values_approach_the_exact_ones_and_always_add_up():
    m = 10
    value = nonlinear_game(m, seed=3)
    exact = exact_shapley(m, value)
    difference = value(np.ones((1, m)))[0] - value(np.zeros((1, m)))[0]
    errors = []
    for samples in (64, 256, 700):
        phi = kernel_values(m, value, samples)
        assert np.abs(phi.sum(axis=0) - difference).max() < 1e-9  # efficiency, however few samples
        errors.append(np.abs(phi - exact).max())
    assert errors[-1] < 0.05 * np.abs(exact).max()
    assert errors[-1] < errors[0]


def test_coalitions_are_distinct_never_empty_or_full_and_repeat_with_the_seed():
    first = kernel_shap.coalitions(20, 256, np.random.default_rng(7))
    again = kernel_shap.coalitions(20, 256, np.random.default_rng(7))
    other = kernel_shap.coalitions(20, 256, np.random.default_rng(8))
    assert len(first) == 256
    sizes = first.masks.sum(axis=1)
    assert sizes.min() >= 1 and sizes.max() <= 19
    assert len({row.tobytes() for row in first.masks}) == 256
    assert np.array_equal(first.masks, again.masks) and np.array_equal(first.weights, again.weights)
    assert not np.array_equal(first.masks, other.masks)


def test_a_feature_the_model_ignores_gets_nothing_and_a_constant_model_gets_zeros():
    def only_feature_two(z):
        return 3.0 * z[:, 2:3]

    phi = kernel_values(8, only_feature_two, 100)
    assert phi[2, 0] == pytest.approx(3.0) and np.abs(np.delete(phi, 2, axis=0)).max() < 1e-9
    assert np.abs(kernel_values(8, lambda z: np.full((len(z), 2), 0.7), 100)).max() < 1e-12


def picture(size=64) -> Image.Image:
    """Grey noise with a red square in the top-left quarter."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(100, 140, size=(size, size, 3)).astype(np.uint8)
    pixels[4:28, 4:28] = (220, 20, 30)
    return Image.fromarray(pixels)


class RedDetector:
    """A stand-in model: the probability of "red" grows with the share of red pixels the view shows."""

    batch = 8

    def __init__(self):
        self.labels = ["red", "other"]
        self.calls = 0

    def __call__(self, views):
        self.calls += len(views)
        red = np.array([((v[..., 0] > 180) & (v[..., 1] < 80)).mean() for v in views])
        p = 1 / (1 + np.exp(-(40 * red - 2)))
        return np.stack([p, 1 - p], axis=1)


def test_the_explained_view_and_a_mask_share_their_geometry():
    image = Image.new("RGB", (120, 80), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((50, 10, 69, 29), fill=(255, 255, 255))
    mask = Image.new("L", (120, 80), 0)
    ImageDraw.Draw(mask).rectangle((50, 10, 69, 29), fill=255)
    view = superpixels.explained_view(image, 96)
    on = superpixels.mask_view(mask, 96)
    assert view.shape == (96, 96, 3) and on.shape == (96, 96)
    bright = view[..., 0] > 127
    assert (bright == on).mean() > 0.98 and on.sum() > 300


def test_segments_are_numbered_densely_and_stripes_still_get_many():
    view = superpixels.explained_view(picture())
    labels, compactness = superpixels.segment(view, 20)
    assert labels.dtype == np.int32 and set(np.unique(labels)) == set(range(labels.max() + 1))
    assert labels.max() + 1 >= 10 and compactness == superpixels.DEFAULT_COMPACTNESS
    stripes = Image.new("RGB", (64, 64), (128, 128, 128))
    for x in range(-64, 128, 10):
        ImageDraw.Draw(stripes).line((x, 0, x + 32, 64), fill=(235, 170, 20), width=5)
    labels, _ = superpixels.segment(superpixels.explained_view(stripes), 20)
    assert labels.max() + 1 >= 10


def test_perturbed_views_replace_exactly_the_switched_off_segments():
    view = superpixels.explained_view(picture(), 32)
    labels, _ = superpixels.segment(view, 8)
    m = labels.max() + 1
    masks = np.zeros((2, m))
    masks[0, 0] = 1
    colour = np.array([1, 2, 3], dtype=np.uint8)
    first, second = next(superpixels.perturbed(view, labels, masks, colour, 2))
    assert np.array_equal(first[labels == 0], view[labels == 0])
    assert (first[labels != 0] == colour).all() and (second == colour).all()


def test_explanations_point_at_the_evidence_add_up_and_repeat():
    model = RedDetector()
    explanation = explain(picture(), model, Settings(samples=128, segments=16))
    assert explanation.evaluations == model.calls == 130 and explanation.complete
    assert explanation.efficiency_gap() < 1e-9
    red = explanation.values[:, 0]
    best = int(np.argmax(red))
    view = explanation.view
    on_square = ((view[..., 0] > 180) & (view[..., 1] < 80))[explanation.segments == best].mean()
    assert on_square > 0.5
    again = explain(picture(), RedDetector(), Settings(samples=128, segments=16))
    assert np.array_equal(again.values, explanation.values)
    summary = explanation.summary(0)
    assert summary["label"] == "red" and len(summary["segment_values"]) == explanation.values.shape[0]
    assert Image.open(io.BytesIO(base64.b64decode(summary["heatmap_png"]))).size == (256, 256)


def test_a_deadline_cuts_the_sampling_short_and_says_so():
    explanation = explain(picture(), RedDetector(), Settings(samples=200), deadline=time.monotonic() - 1)
    assert not explanation.complete and explanation.evaluations == 2
    assert explanation.efficiency_gap() < 1e-9


@pytest.mark.parametrize(
    ("settings", "words"),
    [(Settings(segments=1), "segments"), (Settings(samples=0), "samples"), (Settings(side=4), "side")],
)
def test_settings_that_cannot_work_are_refused(settings, words):
    with pytest.raises(ExplainError, match=words):
        explain(picture(), RedDetector(), settings)


def test_heat_maps_are_red_where_a_segment_helped_and_blue_where_it_hurt():
    view = np.full((8, 8, 3), 128, dtype=np.uint8)
    labels = np.zeros((8, 8), dtype=np.int32)
    labels[:, 4:] = 1
    heat = superpixels.heat_map(view, labels, np.array([0.5, -0.5]))
    assert heat[4, 1, 0] > heat[4, 1, 2] and heat[4, 6, 2] > heat[4, 6, 0]


def test_class_imbalance_is_clarifys_and_flags_the_outliers():
    rows = bias.class_balance(["a", "b", "c", "d"], [100, 100, 20, 300])
    assert [r.class_imbalance for r in rows] == pytest.approx(
        [(420 - 100) / 520, (420 - 100) / 520, 480 / 520, -80 / 520]
    )
    assert [r.flag for r in rows] == [None, None, "under-represented", "over-represented"]
    with pytest.raises(DataError):
        bias.balance_from_metrics({"labels": ["a"]})


def test_confusion_gives_recall_precision_and_the_most_confused_pairs():
    pairs = [("a", "a")] * 8 + [("a", "b")] * 2 + [("b", "b")] * 5 + [("c", "a")] * 3
    confusion = bias.Confusion.of_pairs(pairs, ["a", "b", "c"])
    rows = {r["label"]: r for r in confusion.per_class()}
    assert rows["a"]["recall"] == pytest.approx(0.8) and rows["a"]["precision"] == pytest.approx(8 / 11)
    assert rows["c"]["recall"] == 0 and rows["c"]["precision"] is None
    assert confusion.most_confused() == [
        {"true": "c", "predicted": "a", "count": 3},
        {"true": "a", "predicted": "b", "count": 2},
    ]
    assert confusion.accuracy() == pytest.approx(13 / 18)


def test_batch_transform_output_is_read_by_class_folder(tmp_path):
    answer = {"results": [{"predictions": [{"label": "Basenji", "probability": 0.9}]}]}
    for folder, name in (("003.Basenji", "x.jpg.out"), ("001.Affenpinscher", "y.jpg.out")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text(json.dumps(answer))
    assert sorted(bias.transform_pairs(tmp_path)) == [("Affenpinscher", "Basenji"), ("Basenji", "Basenji")]
    (tmp_path / "003.Basenji" / "z.jpg.out").write_text("<html>")
    with pytest.raises(DataError, match=r"z\.jpg\.out"):
        bias.transform_pairs(tmp_path)


def test_the_report_embeds_its_pictures_and_the_json_matches(tmp_path):
    explanation = explain(picture(), RedDetector(), Settings(samples=64, segments=12))
    report = Report("a stand-in", Settings(samples=64, segments=12), [ImageResult("red.png", explanation, [0, 1], 2)])
    report.balance = bias.class_balance(["red", "other"], [10, 1])
    report.confusion = bias.Confusion.of_pairs([("red", "red"), ("other", "red")], ["red", "other"])
    path = report.write(tmp_path)
    page = path.read_text()
    assert page.count("data:image/png;base64,") == 4  # view, segments, two heat maps
    assert "under-represented" in page and "Most confused" in page
    data = json.loads((tmp_path / "explanations.json").read_text())
    first = data["images"][0]
    assert [e["label"] for e in first["explanations"]] == ["red", "other"]
    assert "heatmap_png" not in first["explanations"][0]
    assert data["predictions"]["most_confused"] == [{"true": "other", "predicted": "red", "count": 1}]
