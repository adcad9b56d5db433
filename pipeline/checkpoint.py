"""The trained-model file: weights and the config to rebuild the model, nothing executable.

Saved as plain tensors, dicts, lists and strings so that ``torch.load(..., weights_only=True)``
reads it: a model file never unpickles arbitrary objects.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from pipeline.config import CONTROLS, ModelConfig, from_dict, to_dict
from pipeline.io import InputError, atomic_path
from pipeline.models.denoiser import ConditionedDenoiser
from pipeline.models.factory import build_denoiser, build_model
from pipeline.models.unfolded import UnfoldedHQS

MODEL_FORMAT = "hyperguide-model-1"


def save_model(path: str | Path, model: UnfoldedHQS, cfg: ModelConfig, channels: int, task: str,
               pretrained_denoiser: dict | None = None, extra: dict | None = None) -> None:
    """Write the model (and the pre-trained denoiser used by the plug-and-play baselines)."""
    state = {"format": MODEL_FORMAT, "task": task, "channels": channels, "model_config": to_dict(cfg),
             "state_dict": model.state_dict(), "pretrained_denoiser": pretrained_denoiser or {}, "extra": extra or {}}
    # Through a file object: torch names the zip's records after a *path's* stem, and the atomic
    # write's random temporary name would make identical weights give different bytes.
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save(state, f)


def load_model(path: str | Path, task: str | None = None, device: torch.device | str = "cpu") -> tuple[UnfoldedHQS, ConditionedDenoiser | None, dict]:
    """``(model, pretrained_denoiser or None, state)``; clear errors for a truncated file, another
    format or another task."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such model file")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's message is a page on weights_only: say it in one line
        raise InputError(f"{path}: refused, it holds Python objects beyond weights (a weights-only load never runs "
                         "them): not a hyperguide model file; use a model.pt written by stages.train") from exc
    except Exception as exc:  # a truncated or corrupt zip, not a torch file at all
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
        raise InputError(f"{path}: not a readable model checkpoint ({type(exc).__name__}: {first}); "
                         "is it complete? Re-train or copy it again") from exc
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise InputError(f"{path}: not a hyperguide model file (format {state.get('format') if isinstance(state, dict) else '?'})")
    if task is not None and state["task"] != task:
        raise InputError(f"{path}: a model for task '{state['task']}', not '{task}'")
    cfg = from_dict(ModelConfig, state["model_config"], "model")
    try:
        model = build_model(cfg, int(state["channels"]), task=str(state["task"]))
        model.load_state_dict(state["state_dict"])
    except (ValueError, RuntimeError) as exc:  # an unknown task, weights of another architecture
        raise InputError(f"{path}: the weights do not fit the {state['task']} model the file describes "
                         f"({' '.join(line.strip() for line in str(exc).splitlines())[:400]}; a file of an earlier "
                         "version of the model is refused: retrain it)") from exc
    model.to(device).eval()
    denoiser = None
    if state["pretrained_denoiser"]:
        denoiser = build_denoiser(cfg, int(state["channels"]))
        denoiser.load_state_dict(state["pretrained_denoiser"])
        denoiser.to(device).eval()
    return model, denoiser, state


def load_control(path: str | Path, task: str, control: str, device: torch.device | str = "cpu") -> UnfoldedHQS:
    """The model of the control ``control`` (a key of :data:`pipeline.config.CONTROLS`:
    ``no_guidance``, ``estimated_guidance``, ``direct_cnn``) in ``path``: :func:`load_model`, and an InputError
    unless it was trained with that control's ``model.guidance`` (a guided model there would pass
    for the control)."""
    model = load_model(path, task=task, device=device)[0]
    if model.guidance_mode != CONTROLS[control]:
        raise InputError(f"{path}: trained with guidance {model.guidance_mode!r}, not {CONTROLS[control]!r} "
                         f"(the {control} control)")
    return model


def load_ablation(path: str | Path, task: str, device: torch.device | str = "cpu") -> UnfoldedHQS:
    """The ``no_guidance`` model of ``path`` (:func:`load_control`)."""
    return load_control(path, task, "no_guidance", device)
