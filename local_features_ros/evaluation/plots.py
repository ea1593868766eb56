"""Small PNG figures for docs/evaluation.md: MMA curves, pose AUC bars, VO trajectories vs ground
truth.

Why Agg: evaluation runs headless (CI, robots over ssh); nothing here opens a window.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

logger = logging.getLogger(__name__)

_FIGSIZE = (4.0, 3.0)
_DPI = 100


def _save(fig: "plt.Figure", path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    logger.info("wrote %s", path)
    return path


def plot_mma(curves: Mapping[str, Mapping[str, float]], path: str | Path,
             title: str = "HPatches MMA") -> Path:
    """``curves``: method -> {"1": mma, ..., "10": mma}."""
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    for name, mma in curves.items():
        ts = sorted(int(t) for t in mma)
        ax.plot(ts, [mma[str(t)] for t in ts], marker="o", ms=3, label=name)
    ax.set_xlabel("threshold [px]")
    ax.set_ylabel("MMA")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_pose_auc(aucs: Mapping[str, Mapping[str, float]], path: str | Path,
                  title: str = "pose AUC") -> Path:
    """``aucs``: method -> {"5": auc, "10": auc, "20": auc}, grouped bars per threshold."""
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    names = list(aucs)
    ths = sorted({int(t) for a in aucs.values() for t in a})
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(ths))
    for k, name in enumerate(names):
        ax.bar(x + k * width, [aucs[name].get(str(t), 0.0) for t in ths], width, label=name)
    ax.set_xticks(x + width * (len(names) - 1) / 2, [f"@{t}°" for t in ths])
    ax.set_ylim(0, 1)
    ax.set_ylabel("AUC")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_trajectory(estimated: Sequence[Sequence[float]], ground_truth: Sequence[Sequence[float]],
                    path: str | Path, title: str = "VO trajectory") -> Path:
    """Top view on the two axes along which the ground truth moves most."""
    est, gt = np.asarray(estimated, float), np.asarray(ground_truth, float)
    axes = np.argsort(-(gt.max(0) - gt.min(0)))[:2]
    a, b = sorted(axes)
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    ax.plot(gt[:, a], gt[:, b], "k-", lw=1.5, label="ground truth")
    ax.plot(est[:, a], est[:, b], "r-", lw=1, label="estimated (gt scale)")
    ax.plot(gt[0, a], gt[0, b], "ko", ms=3)
    ax.set_xlabel("xyz"[a] + " [m]")
    ax.set_ylabel("xyz"[b] + " [m]")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------- summary
def result_label(r: dict) -> str:
    """``method`` or ``method+matcher`` when the matcher is not mutual NN (``aliked+lightglue``):
    the suffix of ``<dataset>_<label>.json`` and the row name of the tables."""
    mtype = (r.get("matcher") or {}).get("type", "nn")
    return r["method"] if mtype == "nn" else f"{r['method']}+{mtype}"


def summarize(results_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Combine every ``<dataset>_<method>.json`` written by ``local-features evaluate`` into one
    figure per dataset and a markdown table (``summary.md``): what docs/evaluation.md shows."""
    import json

    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir else results_dir
    groups: dict[str, dict[str, dict]] = {}
    for p in sorted(results_dir.glob("*.json")):
        try:
            r = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(r, dict) or "protocol_name" not in r:
            continue
        label = result_label(r)
        dataset = p.stem[: -len(label) - 1] if p.stem.endswith("_" + label) else p.stem
        groups.setdefault(dataset, {})[label] = r
    lines = ["# Evaluation summary", ""]
    for dataset, by_method in groups.items():
        kind = next(iter(by_method.values()))["protocol_name"]
        lines += [f"## {dataset} ({kind})", ""]
        if kind == "hpatches":
            plot_mma({m: r["mma"] for m, r in by_method.items()}, out_dir / f"{dataset}_mma.png",
                     title=f"{dataset}: MMA")
            lines += ["| method | MMA@1 | MMA@3 | MMA@5 | MMA@10 | H-acc@1 | H-acc@3 | H-acc@5 | "
                      "repeat. | MLE px | features | matches |", "|---" * 12 + "|"]
            for m, r in by_method.items():
                h = r["homography_accuracy"]
                lines.append(f"| {m} | " + " | ".join(f"{r['mma'][k]:.3f}" for k in ("1", "3", "5", "10"))
                             + " | " + " | ".join(f"{h[k]:.3f}" for k in ("1", "3", "5"))
                             + f" | {_f(r['repeatability'])} | {_f(r['localization_error'])}"
                             f" | {r['features']:.0f} | {r['matches']:.0f} |")
        else:
            plot_pose_auc({m: r["pose_auc"] for m, r in by_method.items()},
                          out_dir / f"{dataset}_auc.png", title=f"{dataset}: pose AUC")
            head = "| method | AUC@5 | AUC@10 | AUC@20 | med. R err deg | med. t err deg |"
            sep = "|---|---|---|---|---|---|"
            if kind == "sequence":
                head += " ATE m | RPE m | RPE deg | failures |"
                sep += "---|---|---|---|"
            lines += [head, sep]
            for m, r in by_method.items():
                a = r["pose_auc"]
                row = (f"| {m} | {100 * a['5']:.1f} | {100 * a['10']:.1f} | {100 * a['20']:.1f} | "
                       f"{_f(r.get('median_rotation_error'))} | "
                       f"{_f(r.get('median_translation_error'))} |")
                if kind == "sequence":
                    d = r["drift"]
                    row += (f" {_f(d['ate_rmse_m'])} | {_f(d['rpe_trans_rmse_m'])} | "
                            f"{_f(d['rpe_rot_mean_deg'])} | {r['failures']}/{r['num_frames'] - 1} |")
                    plot_trajectory(r["trajectory"]["estimated"], r["trajectory"]["ground_truth"],
                                    out_dir / f"{dataset}_{m}_traj.png", title=f"{dataset}: {m}")
                lines.append(row)
        lines.append("")
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines))
    return path


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(sys.argv) not in (2, 3):
        sys.stderr.write("usage: python -m local_features_ros.evaluation.plots RESULTS_DIR [OUT_DIR]\n")
        sys.exit(2)
    sys.stdout.write(summarize(*sys.argv[1:]).read_text())
