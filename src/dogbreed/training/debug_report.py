"""debugger-report.html: what the smdebug trial, the rules and the profile say, in one self-contained page.

Built at the end of training beside metrics.json, or again from any saved trial with
``make debug-report DEBUG_DIR=...`` (``dogbreed debug-report``). Pictures are PNGs embedded as
base64, so the file can be mailed or opened from S3 as it is.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from dogbreed.errors import ConfigError, run_cli
from dogbreed.training.profile import PROFILE_FILE, UPDATES_FILE
from dogbreed.training.reports import CONFUSION_PLOT, CURVES_PLOT, METRICS_FILE, pyplot
from dogbreed.training.rules import RuleResult, run_rules, write_rules

REPORT_FILE = "debugger-report.html"


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def loss_by_mode(trial) -> str | None:
    from smdebug.core.modes import ModeKeys

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    drawn = False
    for mode, label in ((ModeKeys.TRAIN, "training"), (ModeKeys.EVAL, "validation"), (ModeKeys.PREDICT, "test")):
        for name in trial.tensor_names(collection="losses"):
            tensor = trial.tensor(name)
            steps = tensor.steps(mode=mode)
            if not steps:
                continue
            xs = [trial.global_step(mode, s) for s in steps]
            ys = [float(np.mean(tensor.value(s, mode=mode))) for s in steps]
            ax.plot(xs, ys, ".-" if len(xs) < 60 else "-", label=label, markersize=3)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="global step", ylabel="loss", title="Loss by mode")
    ax.legend()
    return _png(fig)


def gradient_heatmap(trial) -> str | None:
    names = [n for n in trial.tensor_names(collection="gradients")]
    if not names:
        return None
    steps = sorted({s for n in names for s in trial.tensor(n).steps()})
    grid = np.full((len(names), len(steps)), np.nan)
    for row, name in enumerate(names):
        tensor = trial.tensor(name)
        for column, step in enumerate(steps):
            if step in tensor.steps():
                grid[row, column] = tensor.reduction_value(step, "l2")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.12 * len(names) + 1.5)))
    with np.errstate(divide="ignore", invalid="ignore"):
        image = ax.imshow(np.log10(grid), aspect="auto", interpolation="nearest", cmap="viridis")
    fig.colorbar(image, ax=ax, label="log10 gradient L2 norm")
    ax.set(xlabel="saved training step", ylabel="layer", title="Gradient norm per layer over steps")
    ticks = np.linspace(0, len(steps) - 1, min(len(steps), 10)).astype(int)
    ax.set_xticks(ticks, [str(steps[i]) for i in ticks])
    if len(names) <= 40:
        ax.set_yticks(range(len(names)), [n.removeprefix("gradient/") for n in names], fontsize=6)
    else:
        ax.set_yticks([])
    return _png(fig)


def weight_norm_changes(trial) -> str | None:
    """Relative change of each layer's weight L2 norm between saved steps (a lower bound of the update ratio)."""
    from smdebug.core.modes import ModeKeys

    names = trial.tensor_names(collection="weights")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    drawn = False
    for name in names:
        tensor = trial.tensor(name)
        steps = tensor.steps(mode=ModeKeys.TRAIN)  # weights saved while evaluating have not moved
        norms = [float(tensor.reduction_value(s, "l2", mode=ModeKeys.TRAIN)) for s in steps]
        pairs = [
            (trial.global_step(ModeKeys.TRAIN, step), abs(b - a) / a)
            for step, a, b in zip(steps[1:], norms, norms[1:], strict=False)
            if a > 0 and b != a
        ]
        if pairs:
            ax.plot(*zip(*pairs, strict=True), linewidth=0.8, alpha=0.7)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_yscale("log")
    ax.set(xlabel="global step", ylabel="|d||w||| / ||w||", title="Weight-norm change between saves, per layer")
    return _png(fig)


def profile_pictures(profile: dict[str, Any]) -> str | None:
    """Step time (waiting for data vs computing), images per second, and system use over time."""
    steps, system = profile.get("steps") or [], profile.get("system") or []
    if not steps:
        return None
    plt = pyplot()
    rows = 3 if system else 2
    fig, axes = plt.subplots(rows, 1, figsize=(8, 2.6 * rows))
    index = np.arange(1, len(steps) + 1)
    data_ms = np.array([s["data_s"] for s in steps]) * 1000
    compute_ms = np.array([s["compute_s"] for s in steps]) * 1000
    axes[0].stackplot(index, data_ms, compute_ms, labels=["waiting for data", "computing"], alpha=0.8)
    axes[0].set(xlabel="training step", ylabel="ms", title="Step time")
    axes[0].legend(loc="upper right", fontsize=8)
    seconds = (data_ms + compute_ms) / 1000
    rate = np.array([s["images"] for s in steps]) / np.maximum(seconds, 1e-9)
    axes[1].plot(index, rate, linewidth=0.8)
    axes[1].set(xlabel="training step", ylabel="images/s", title="Throughput")
    if system:
        t = [row["t"] for row in system]
        axes[2].plot(t, [row["cpu_percent"] for row in system], label="CPU %")
        if any("gpu_percent" in row for row in system):
            axes[2].plot(t, [row.get("gpu_percent", np.nan) for row in system], label="GPU %")
        axes[2].set(xlabel="seconds", ylabel="%", title="Utilisation and memory", ylim=(0, 105))
        memory = axes[2].twinx()
        memory.plot(t, [row["memory_mb"] for row in system], color="gray", linestyle="--", label="memory MB")
        if any("gpu_memory_mb" in row for row in system):
            memory.plot(
                t,
                [row.get("gpu_memory_mb", np.nan) for row in system],
                color="black",
                linestyle=":",
                label="GPU memory MB",
            )
        memory.set_ylabel("MB")
        axes[2].legend(loc="upper left", fontsize=8)
        memory.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _profile_text(profile: dict[str, Any]) -> str:
    summary = profile.get("summary") or {}
    if not summary.get("steps"):
        return ""
    share = summary["data_wait_share"]
    verdict = (
        "The input pipeline is the bottleneck: add --workers or make the images smaller on disk."
        if share is not None and share > 0.2
        else "The input pipeline keeps up with the model."
    )
    return (
        f"<p>{summary['steps']} steps on {html.escape(str(profile.get('device')))}: "
        f"{summary['images_per_s']} images/s; {share * 100:.1f}% of step time waiting for data. {verdict}</p>"
    )


def update_ratio_lines(updates: dict[str, Any]) -> str | None:
    """Each layer's weight-update ratio over training steps, on a log scale."""
    rows = updates.get("steps") or []
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    steps = [row["step"] for row in rows]
    for name in dict.fromkeys(name for row in rows for name in row["layers"]):
        ax.plot(steps, [max(row["layers"].get(name, np.nan), 1e-12) for row in rows], linewidth=0.8, alpha=0.7)
    ax.axhline(1e-3, color="black", linestyle="--", linewidth=0.8, label="1e-3, the usual order")
    ax.set_yscale("log")
    ax.set(xlabel="training step", ylabel="||dw|| / ||w||", title="Weight-update ratio per layer")
    ax.legend(fontsize=8)
    return _png(fig)


def _file_image(path: Path) -> str | None:
    return base64.b64encode(path.read_bytes()).decode("ascii") if path.is_file() else None


def _details(details: dict[str, Any]) -> str:
    """What a fired rule found (the layer, the counts), as short lines under its summary."""
    if not details:
        return ""
    return "<br><small>" + html.escape(", ".join(f"{k}: {v}" for k, v in details.items())) + "</small>"


def _verdicts(results: list[RuleResult]) -> str:
    fired = [r for r in results if r.triggered]
    headline = (
        f"<p class='bad'>{len(fired)} of {len(results)} rules fired.</p>"
        if fired
        else f"<p class='good'>None of the {len(results)} rules fired.</p>"
    )
    rows = "".join(
        f"<tr class='{'bad' if r.triggered else 'good'}'><td>{html.escape(r.rule)}</td>"
        f"<td>{'fired at step ' + str(r.step) if r.triggered else 'quiet'}</td><td>{html.escape(r.summary)}"
        f"{_details(r.details)}</td>"
        f"<td><code>{html.escape(json.dumps(r.parameters))}</code></td></tr>"
        for r in results
    )
    return (
        f"{headline}<table><tr><th>rule</th><th>verdict</th><th>in plain words</th><th>parameters</th></tr>"
        f"{rows}</table>"
    )


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _section(title: str, body: str | None) -> str:
    return f"<h2>{html.escape(title)}</h2>{body}" if body else ""


def build_report(trial_dir: Path, output_dir: Path) -> Path:
    """Run the rules on the trial in ``trial_dir`` and write rules.json and debugger-report.html into
    ``output_dir``. The trial is loaded once (smdebug waits a second on every load of a finished trial)."""
    from smdebug.trials import create_trial

    if not trial_dir.is_dir():
        raise ConfigError(f"no smdebug trial at {trial_dir}")
    trial = create_trial(str(trial_dir))
    results = run_rules(trial)
    write_rules(results, output_dir)
    metrics = _read_json(output_dir / METRICS_FILE)
    profile = _read_json(output_dir / PROFILE_FILE)
    images = {
        "profile": profile_pictures(profile),
        "loss": loss_by_mode(trial),
        "gradients": gradient_heatmap(trial),
        "weights": update_ratio_lines(_read_json(output_dir / UPDATES_FILE)) or weight_norm_changes(trial),
        "curves": _file_image(output_dir / CURVES_PLOT),
        "confusion": _file_image(output_dir / CONFUSION_PLOT),
    }
    summary = ""
    if "test_accuracy" in metrics:
        summary = (
            f"<p>Test accuracy {metrics['test_accuracy']:.4f}, best epoch {metrics.get('best_epoch')}, "
            f"{metrics.get('epochs_completed')} epoch(s).</p>"
        )
    body = "".join(
        [
            "<h1>Training insights</h1>",
            summary,
            "<h2>Rules</h2>",
            _verdicts(results),
            _section("Loss by mode", images["loss"] and _img(images["loss"], "loss by mode")),
            _section("Gradients", images["gradients"] and _img(images["gradients"], "gradient heatmap")),
            _section("Weight updates", images["weights"] and _img(images["weights"], "weight-update ratios")),
            _section("Learning curves", images["curves"] and _img(images["curves"], "learning curves")),
            _section("Confusion matrix (test)", images["confusion"] and _img(images["confusion"], "confusion matrix")),
            _section("Profile", images["profile"] and _profile_text(profile) + _img(images["profile"], "profile")),
        ]
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Training insights</title><style>{STYLE}"
        f"</style></head><body>{body}</body></html>"
    )
    path = output_dir / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path


STYLE = (
    "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;font-size:90%}"
    "tr.bad td:first-child,p.bad{color:#b00;font-weight:bold}p.good{color:#070;font-weight:bold}"
    "img{max-width:100%}"
)


def get_args_parser(prog: str = "dogbreed debug-report") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="(Re)build debugger-report.html and rules.json from a saved smdebug trial."
    )
    parser.add_argument("debug_dir", type=Path, help="the smdebug trial (a job's tensors folder)")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where metrics.json and the plots are, and the report goes; default: the trial's parent folder",
    )
    return parser


def main(args: argparse.Namespace, prog: str = "dogbreed debug-report") -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_cli(
        prog,
        lambda: print(f"report: {build_report(args.debug_dir, args.output_dir or args.debug_dir.parent)}"),
    )


def run(argv: list[str] | None = None, prog: str = "dogbreed debug-report") -> int:
    return main(get_args_parser(prog).parse_args(argv), prog)
