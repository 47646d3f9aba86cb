"""The return a comparison counts steps to, when ``--threshold`` does not say.

Gymnasium's registry is the table: an env registered with a ``reward_threshold`` (the
return at which its authors call it solved: 475 for CartPole-v1) gets that. Suite tasks
(DMC, Atari, Crafter) have no agreed threshold, and a comparison on one needs
``--threshold``.
"""

from __future__ import annotations

# Thresholds for tasks the registry has none for, by --env id; empty until one is agreed.
THRESHOLDS: dict[str, float] = {}


def default_threshold(task: str) -> float | None:
    """The threshold of ``task``: :data:`THRESHOLDS`, else its registered
    ``reward_threshold``, else None."""
    if task in THRESHOLDS:
        return THRESHOLDS[task]
    try:
        import gymnasium

        spec = gymnasium.spec(task)
    except Exception:  # a suite id, an unknown id, or a module gymnasium cannot find
        return None
    value = spec.reward_threshold
    return float(value) if value is not None else None
