"""Pictures of what the model believes: open-loop frames and counterfactual branches.

Image observations are shown as frames (true, predicted, error), framed green while
the model sees the real frames and red once it only imagines. Vector observations are
drawn as curves with matplotlib (its Agg backend, chosen when drawing, never at import).
"""

from __future__ import annotations

import io

import numpy as np

GREEN = np.array([40, 180, 60], np.uint8)
RED = np.array([210, 50, 40], np.uint8)


def _frame(img: np.ndarray, color: np.ndarray, pad: int = 2) -> np.ndarray:
    """``[H, W, C]`` uint8 (C 1 or 3) inside a coloured border, as RGB."""
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, -1)
    out = np.empty((img.shape[0] + 2 * pad, img.shape[1] + 2 * pad, 3), np.uint8)
    out[:] = color
    out[pad:-pad, pad:-pad] = img[..., :3]
    return out


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x, np.float32) * 255.0, 0, 255).astype(np.uint8)


def frame_strip(frames: np.ndarray, context: int, max_columns: int = 16) -> np.ndarray:
    """``[T, H, W, C]`` uint8 frames side by side, context green, imagined red,
    every ``ceil(T / max_columns)``-th frame."""
    T = frames.shape[0]
    step = max(1, -(-T // max_columns))
    cells = [_frame(frames[t], GREEN if t < context else RED) for t in range(0, T, step)]
    return np.concatenate(cells, 1)


def openloop_frames(true: np.ndarray, pred: np.ndarray, context: int) -> np.ndarray:
    """Rows of true, predicted and error frames for each window.

    ``true`` uint8 ``[B, T, H, W, C]``, ``pred`` floats in [0, 1] of the same shape.
    The error row shows ``|pred - true|`` brightened 2x.
    """
    pred8 = _to_uint8(pred)
    error = np.clip(2 * np.abs(pred8.astype(np.int16) - true.astype(np.int16)), 0, 255).astype(np.uint8)
    rows = []
    for b in range(true.shape[0]):
        for row in (true[b], pred8[b], error[b]):
            rows.append(frame_strip(row, context))
        rows.append(np.full((6, rows[-1].shape[1], 3), 255, np.uint8))  # a gap between windows
    return np.concatenate(rows[:-1], 0)


def curves_png(
    title: str, series: dict[str, np.ndarray], context: int | None = None, xlabel: str = "step"
) -> bytes:
    """A PNG line plot of named 1-D series (dashed when the name says 'predicted')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    for name, values in series.items():
        ax.plot(
            np.arange(len(values)),
            values,
            "--" if "predicted" in name or "imagined" in name else "-",
            label=name,
        )
    if context is not None:
        ax.axvline(context - 0.5, color="k", lw=0.8)
        ax.text(context - 0.4, ax.get_ylim()[1], " imagined from here", va="top", fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def png_bytes(image: np.ndarray, scale: int = 2) -> bytes:
    """An RGB uint8 picture as PNG bytes, enlarged ``scale`` times (nearest)."""
    from PIL import Image

    img = Image.fromarray(image)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
