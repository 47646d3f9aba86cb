"""What the world model believes, as numbers: errors against imagination horizon.

From one open-loop :class:`~dreamrl.diagnostics.rollout.Rollout` over held-out windows
(K steps observed, H imagined under the recorded actions):

- ``reward_error[h]``, ``continue_error[h]``: mean absolute error of the reward and
  continue predictions ``h`` steps into imagination;
- ``kl[h]``: KL(posterior || imagined prior) at step ``h``, nats summed over latents: how
  far the model's guess drifts from what the real frames say (the compounding error);
- ``obs_error[key][h]``: error of the decoded imagined observation as the fraction of
  the observation's variance left unexplained (mean squared error over the variance of
  the true values; images in [0, 1], vectors in symlog space): 0 is perfect, 1 is no
  better than predicting the mean frame;
- ``recon_error[key]``: the same for the observed context (the representation alone);
- latent usage of the posterior codes: mean entropy per latent variable, its perplexity
  (effective classes in use) and the fraction of classes ever used;
- ``drift[h]``: total-variation distance between the class frequencies of imagined and
  real latents at step ``h``, averaged over latent variables (0: same distribution).

:func:`summarize` turns them into a few plain sentences naming the weakest component.
"""

from __future__ import annotations

from typing import Any

import torch

from dreamrl.diagnostics.rollout import Rollout
from dreamrl.nets.distributions import categorical_kl, symlog
from dreamrl.nets.rssm import CLASS_DIM
from dreamrl.world_models.base import Batch


def _per_horizon(error: torch.Tensor) -> list[float]:
    """``[B, H, ...] -> [H]`` means."""
    return error.flatten(2).mean(-1).mean(0).tolist() if error.dim() > 2 else error.mean(0).tolist()


def _obs_error(pred: torch.Tensor, true: torch.Tensor, image: bool) -> torch.Tensor:
    """Unexplained variance ``[B, T]``: squared error per element over the variance of
    the true values (images scaled to [0, 1], vectors in symlog space)."""
    target = true.float() / 255.0 if image else symlog(true.float())
    pred = pred if image else symlog(pred)
    variance = target.flatten(2).var(dim=(0, 1)).mean().clamp_min(1e-8)  # per element, averaged
    return (pred - target).square().flatten(2).mean(-1) / variance


def class_frequencies(stoch: torch.Tensor) -> torch.Tensor:
    """Frequency of each class per latent variable ``[C, S]`` over one-hot samples ``[..., C, S]``."""
    return stoch.reshape(-1, *stoch.shape[-2:]).float().mean(0)


def diagnose(rollout: Rollout, batch: Batch, image_keys: set[str], discount: float) -> dict[str, Any]:
    """The diagnostics of one rollout of ``batch`` (see the module docstring).

    ``discount`` is what the continue head folds into its target (1 - 1/horizon).
    """
    K = rollout.context
    true_rew = batch.reward[:, K:]
    true_cont = (1.0 - batch.is_terminal[:, K:].float()) * discount
    obs_error, recon_error = {}, {}
    for key, pred in rollout.recon.items():
        err = _obs_error(pred, batch.obs[key], key in image_keys)
        recon_error[key] = float(err[:, :K].mean())
        obs_error[key] = err[:, K:].mean(0).tolist()
    out: dict[str, Any] = {
        "context": K,
        "horizon": int(true_rew.shape[1]),
        "sequences": int(true_rew.shape[0]),
        "reward_error": _per_horizon((rollout.reward - true_rew).abs()),
        "continue_error": _per_horizon((rollout.cont - true_cont).abs()),
        "obs_error": obs_error,
        "recon_error": recon_error,
        "probe": rollout.probe,
        "reward_scale": float(batch.reward.std().clamp_min(0) if batch.reward.numel() > 1 else 0.0),
    }
    if rollout.post_logits is not None and rollout.prior_logits is not None:
        out["kl"] = _per_horizon(categorical_kl(rollout.post_logits[:, K:], rollout.prior_logits, CLASS_DIM))
    if rollout.post_codes is not None and rollout.imagined_codes is not None:
        out.update(_latent_usage(rollout.post_codes, rollout.imagined_codes, K))
    return out


def _latent_usage(post_codes: torch.Tensor, imagined_codes: torch.Tensor, context: int) -> dict[str, Any]:
    """Latent usage of the posterior codes ``[B, K+H, C, S]`` and the drift of the
    imagined ones ``[B, H, C, S]`` from the real ones, per imagined step."""
    freq = class_frequencies(post_codes)
    entropy = -(freq * torch.log(freq.clamp_min(1e-12))).sum(0).mean()
    real_at = post_codes[:, context:]
    drift = [
        float(
            0.5
            * (class_frequencies(imagined_codes[:, h]) - class_frequencies(real_at[:, h])).abs().sum(0).mean()
        )
        for h in range(real_at.shape[1])
    ]
    return {
        "latent_entropy": float(entropy),
        "latent_perplexity": float(torch.exp(entropy)),
        "latent_classes": int(freq.shape[0]),
        "latent_usage": float((freq > 0).float().mean()),
        "drift": drift,
    }


def weakest(d: dict[str, Any]) -> tuple[str, float]:
    """The component with the largest normalised error at the last imagined step, and
    that error. Each is on a 0 (perfect) to about 1 (useless) scale: unexplained
    variance of the reconstruction, reward error over the reward's spread, continue
    probability error, and the drift of imagined latents from real ones."""
    scale = d["reward_scale"]
    rew = d["reward_error"][-1] / scale if scale > 1e-6 else d["reward_error"][-1]
    representation = (
        "the representation (a probe decoder reconstructs observed frames poorly)"
        if d.get("probe")
        else "the representation (observed frames are reconstructed poorly)"
    )
    candidates = {
        representation: max(d["recon_error"].values(), default=0.0),
        "the reward head": rew,
        "the continue head": d["continue_error"][-1],
    }
    if "drift" in d:
        candidates["the dynamics (imagined latents drift from the real ones)"] = d["drift"][-1]
    name = max(candidates, key=lambda k: candidates[k])
    return name, float(candidates[name])


def summarize(d: dict[str, Any]) -> str:
    """A few plain sentences: how each component does, and which looks weakest."""
    H = d["horizon"]
    recon = max(d["recon_error"].values(), default=0.0)
    dream = max((v[-1] for v in d["obs_error"].values()), default=0.0)
    if not d["recon_error"]:
        first = "Nothing is decoded: the model has no decoder to look through."
    else:
        who = (
            "A probe decoder (trained on stopped latents) reconstructs"
            if d.get("probe")
            else "The model reconstructs"
        )
        first = (
            f"{who} observed steps with {recon:.1%} of their variance unexplained, "
            f"imagined step {H} with {dream:.1%}."
        )
    lines = [
        first,
        f"Reward error {d['reward_error'][0]:.3g} one step ahead and {d['reward_error'][-1]:.3g} at {H} "
        f"steps (rewards spread {d['reward_scale']:.3g}); continue error {d['continue_error'][0]:.3f} and "
        f"{d['continue_error'][-1]:.3f}.",
    ]
    if "kl" in d and "drift" in d:
        lines.append(
            f"KL(real || imagined) goes from {d['kl'][0]:.2f} to {d['kl'][-1]:.2f} nats over {H} steps; "
            f"imagined latents differ from real ones by total variation {d['drift'][0]:.2f} at step 1 and "
            f"{d['drift'][-1]:.2f} at step {H}."
        )
        lines.append(
            f"Latent codes: {d['latent_perplexity']:.2f} of {d['latent_classes']} classes in effective use "
            f"per variable, {d['latent_usage']:.0%} of classes ever used."
        )
    gap = d.get("fantasy_gap")
    if gap:
        lines.append(
            f"Fantasy gap: at {gap['horizons'][-1]} imagined steps the model promises a return of "
            f"{gap['imagined'][-1]:.3g} where {gap['real']:.3g} really followed (gap {gap['gap'][-1]:+.3g})."
        )
    name, error = weakest(d)
    if error < 0.1:
        lines.append("No component stands out: the model predicts these windows well.")
    else:
        lines.append(f"Weakest: {name}.")
    return " ".join(lines)
