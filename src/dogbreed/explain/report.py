"""explain-report.html and explanations.json: what ``make explain`` found, for people and for programs.

The page is self-contained (PNGs embedded as base64), so it can be mailed or
opened from S3 as it is. Per image: the explained view, the top predictions,
a heat map for each explained class, the numbered segments and their values.
Then, where given, the training data's class balance and the predictions'
per-class recall, precision and most confused pairs (:mod:`dogbreed.explain.bias`).
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from dogbreed.explain import superpixels
from dogbreed.explain.bias import ClassBalance, Confusion
from dogbreed.explain.explainer import Explanation, Settings

REPORT_FILE = "explain-report.html"
JSON_FILE = "explanations.json"

STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%}"
    "figure{display:inline-block;margin:0 0.8em 1em 0;text-align:center}figcaption{font-size:85%}"
    "img{image-rendering:auto}.bar{display:inline-block;height:0.8em}.pos{background:#dc141e}"
    ".neg{background:#1e3ce6}.flag{color:#b00;font-weight:bold}section{border-top:1px solid #ddd;padding-top:1em}"
)


@dataclass
class ImageResult:
    name: str
    explanation: Explanation
    classes: list[int]  # the explained classes, top first
    top_k: int = 5

    def as_json(self) -> dict[str, Any]:
        e = self.explanation
        return {
            "image": self.name,
            "predictions": [
                {"label": e.labels[i], "class_index": i, "probability": round(float(e.probabilities[i]), 6)}
                for i in e.top(self.top_k)
            ],
            "explanations": [e.summary(i, images=False) for i in self.classes],
            "seconds": round(e.seconds, 3),
            "efficiency_gap": e.efficiency_gap(),
        }


@dataclass
class Report:
    model: str
    settings: Settings
    images: list[ImageResult] = field(default_factory=list)
    balance: list[ClassBalance] | None = None
    confusion: Confusion | None = None
    confusion_source: str = ""

    def as_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "settings": asdict(self.settings),
            "images": [result.as_json() for result in self.images],
        }
        if self.balance is not None:
            payload["class_balance"] = [asdict(row) for row in self.balance]
        if self.confusion is not None:
            payload["predictions"] = {
                "source": self.confusion_source,
                "accuracy": self.confusion.accuracy(),
                "per_class": self.confusion.per_class(),
                "most_confused": self.confusion.most_confused(),
            }
        return payload

    def write(self, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        (out / JSON_FILE).write_text(json.dumps(self.as_json(), indent=2) + "\n", encoding="utf-8")
        path = out / REPORT_FILE
        path.write_text(self.html(), encoding="utf-8")
        return path

    def html(self) -> str:
        s = self.settings
        intro = (
            f"<p>Model: {html.escape(self.model)}. Kernel SHAP over SLIC superpixels: {s.segments} segments asked, "
            f"compactness {s.compactness}, {s.samples} samples, seed {s.seed}, "
            f"baseline {html.escape(str(s.baseline))}. "
            "Red segments raised the class's probability, blue ones lowered it; a segment's value is its share of "
            "the difference between the probability on the image and on the baseline.</p>"
        )
        parts = ["<h1>Explanations</h1>", intro, *(_image_section(r) for r in self.images)]
        if self.balance is not None:
            parts.append(_balance_section(self.balance))
        if self.confusion is not None:
            parts.append(_confusion_section(self.confusion, self.confusion_source))
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>Explanations</title><style>{STYLE}</style>"
            f"</head><body>{''.join(parts)}</body></html>"
        )


def _img(pixels: np.ndarray, alt: str, caption: str) -> str:
    data = superpixels.png_base64(pixels)
    return (
        f'<figure><img width="240" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def numbered_segments(view: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """The view with segment edges drawn and each segment's number at its centre."""
    from skimage.segmentation import find_boundaries

    pixels = view.copy()
    pixels[find_boundaries(segments, mode="inner")] = (255, 255, 0)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for label in range(int(segments.max()) + 1):
        ys, xs = np.nonzero(segments == label)
        if len(xs):
            x, y = float(xs.mean()), float(ys.mean())
            draw.text((x - 4, y - 6), str(label), fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(image)


def _image_section(result: ImageResult) -> str:
    e = result.explanation
    rows = "".join(
        f"<tr><td>{html.escape(e.labels[i])}</td><td>{e.probabilities[i]:.4f}</td></tr>" for i in e.top(result.top_k)
    )
    figures = [
        _img(e.view, "explained image", "explained view"),
        _img(numbered_segments(e.view, e.segments), "segments", "segments"),
    ]
    figures += [
        _img(e.heat_map(i), f"heat map for {e.labels[i]}", f"{e.labels[i]} ({e.probabilities[i]:.3f})")
        for i in result.classes
    ]
    top = result.classes[0]
    values = e.values[:, top]
    scale = float(np.abs(values).max()) or 1.0
    value_rows = "".join(
        f"<tr><td>{j}</td><td>{values[j]:+.4f}</td><td><span class='bar {'pos' if values[j] >= 0 else 'neg'}' "
        f"style='width:{120 * abs(values[j]) / scale:.0f}px'></span></td></tr>"
        for j in np.argsort(-np.abs(values), kind="stable")
    )
    status = "" if e.complete else " <span class='flag'>cut short by the time limit</span>"
    return (
        f"<section><h2>{html.escape(result.name)}</h2><table><tr><th>class</th><th>probability</th></tr>{rows}</table>"
        f"{''.join(figures)}<p>{e.evaluations} model evaluations in {e.seconds:.2f} s{status}; probability on the "
        f"baseline {e.baseline[top]:.4f}; values add up to the difference within {e.efficiency_gap():.1e}.</p>"
        f"<details><summary>Segment values for {html.escape(e.labels[top])}</summary><table><tr><th>segment</th>"
        f"<th>value</th><th></th></tr>{value_rows}</table></details></section>"
    )


def _balance_section(rows: list[ClassBalance]) -> str:
    flagged = [row for row in rows if row.flag]
    body = "".join(
        f"<tr{' class=flag' if row.flag else ''}><td>{html.escape(row.label)}</td><td>{row.count}</td>"
        f"<td>{row.class_imbalance:+.4f}</td><td>{row.flag or ''}</td></tr>"
        for row in rows
    )
    summary = f"{len(flagged)} of {len(rows)} classes flagged." if flagged else "No class is flagged."
    return (
        "<section><h2>Training data: class balance</h2><p>Class Imbalance (CI) of each class against the rest, as "
        f"Clarify computes it before training. {summary}</p><table><tr><th>class</th><th>images</th><th>CI</th>"
        f"<th></th></tr>{body}</table></section>"
    )


def _confusion_section(confusion: Confusion, source: str) -> str:
    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    per_class = "".join(
        f"<tr><td>{html.escape(row['label'])}</td><td>{row['support']}</td><td>{cell(row['recall'])}</td>"
        f"<td>{cell(row['precision'])}</td></tr>"
        for row in confusion.per_class()
    )
    pairs = "".join(
        f"<tr><td>{html.escape(p['true'])}</td><td>{html.escape(p['predicted'])}</td><td>{p['count']}</td></tr>"
        for p in confusion.most_confused()
    )
    pairs_table = (
        f"<h3>Most confused</h3><table><tr><th>true</th><th>predicted</th><th>images</th></tr>{pairs}</table>"
        if pairs
        else "<p>No image was misclassified.</p>"
    )
    return (
        f"<section><h2>Predictions</h2><p>{html.escape(source)}: accuracy {confusion.accuracy():.4f} over "
        f"{int(confusion.matrix.sum())} images.</p><table><tr><th>class</th><th>images</th><th>recall</th>"
        f"<th>precision</th></tr>{per_class}</table>{pairs_table}</section>"
    )
