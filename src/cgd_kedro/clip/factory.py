"""open_clip models by name, with weights only ever read from local files.

The project registers its own model configs (``model_configs/*.json``: the embedded world's
``cgd-embedded-clip`` and ``cgd-small-clip``, the same model for real datasets' CLIP stand-in, with
open_clip's default normalisation) next to open_clip's. ``pretrained`` tags are never used: nothing
is downloaded. A real CLIP (e.g. ``ViT-B-32`` with ``laion2b_s34b_b79k`` weights) is used by saving
its open_clip state_dict to a file once and pointing ``clip.weights`` at it.

``cgd-embedded-clip`` is open_clip's ModifiedResNet (widths 32..256 at 32x32 input, attention
pooling) with a 3-layer text transformer: 12 M parameters, half of them the token embedding.
On the embedded world it reaches about 0.79 zero-shot accuracy after 10 epochs (5 min on 2 CPU
cores); a ViT of similar size (patch 4, 4 layers) stayed near chance after 3 epochs and took twice
as long per epoch, because it has no convolutional prior to find shapes with.

A CLIP checkpoint in the catalog is ``{"model_name": str, "state_dict": {...}}``.
"""

from __future__ import annotations

import logging
import pickle
from functools import cache
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "model_configs"
EMBEDDED_CLIP = "cgd-embedded-clip"
# The real datasets' CLIP stand-in: the same small model, with open_clip's default normalisation
# (natural images), pretrained on a slice held out of the training set (see clip.reference).
SMALL_CLIP = "cgd-small-clip"
PRETRAINABLE_CLIPS = (EMBEDDED_CLIP, SMALL_CLIP)
# Input normalisation of the project's own CLIPs: the embedded world's pixel statistics
# (open_clip's defaults, OpenAI's ImageNet-like mean/std, are used for every other model).
PROJECT_PREPROCESS = {EMBEDDED_CLIP: {"mean": (0.465, 0.465, 0.454), "std": (0.195, 0.182, 0.194)}}


class _RandomInitNotice(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly": here that is the
    intent (weights come from the project's own pretraining or ``clip.weights``). A filter on the
    root logger's records, installed once, rather than switching the root logger off and on
    around each model creation, which raced with other threads' logging."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "root" and record.getMessage().startswith("No pretrained weights loaded")
        )


@cache
def _open_clip():
    """open_clip, imported on first use with the project's model configs registered (importing it
    takes seconds; a run whose parameters are refused, or that never
    builds a CLIP, does not pay it)."""
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    logging.getLogger().addFilter(_RandomInitNotice())  # open_clip logs on the root logger
    return open_clip


def list_clip_models() -> list[str]:
    return _open_clip().list_models()


def check_clip_name(model_name: str) -> None:
    if model_name in PRETRAINABLE_CLIPS:  # the project's own configs (model_configs/)
        return
    if model_name not in list_clip_models():
        raise ValueError(
            f"clip.model_name: unknown open_clip model {model_name!r}; e.g. "
            f"{EMBEDDED_CLIP!r}, 'ViT-B-32', 'RN50'"
        )


def create_clip(model_name: str) -> nn.Module:
    """A randomly initialised open_clip model ``model_name`` (never downloads anything)."""
    check_clip_name(model_name)
    return _open_clip().create_model(
        model_name, pretrained=None, force_preprocess_cfg=PROJECT_PREPROCESS.get(model_name)
    )


def get_tokenizer(model_name: str):
    check_clip_name(model_name)
    return _open_clip().get_tokenizer(model_name)


def resolve_weights_path(path: str | Path) -> Path:
    """``path`` itself, or, for a Kedro versioned dataset folder
    (``x.safetensors/<version>/x.safetensors``, e.g.
    ``data/06_models/embedded/clip_badnet/backdoored_clip.safetensors``), its latest version."""
    path = Path(path)
    if path.is_dir():
        versions = sorted(v / path.name for v in path.iterdir() if (v / path.name).is_file())
        if not versions:
            raise FileNotFoundError(
                f"clip.weights: {str(path)!r} is a folder without versions of {path.name!r}"
            )
        return versions[-1]
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A CLIP state_dict from a local ``.safetensors`` file or a torch checkpoint read with
    ``weights_only=True`` (open_clip training checkpoints' ``{"state_dict": ...}`` are unwrapped).
    A versioned dataset folder stands for its latest version (``resolve_weights_path``)."""
    path = resolve_weights_path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"clip.weights: CLIP weights file {str(path)!r} does not exist; save an open_clip "
            "state_dict there (nothing is downloaded)"
        )
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError
    ):  # torch's advice (weights_only=False) is exactly what must not be done
        raise ValueError(
            f"clip.weights: {str(path)!r} refused: it holds Python objects other than tensors (a "
            "pickle that would run code when loaded); save the model's state_dict with "
            "safetensors or torch.save(model.state_dict())"
        ) from None
    except (SafetensorError, RuntimeError, OSError, ValueError, EOFError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ValueError(
            f"clip.weights: {str(path)!r} is not a readable CLIP checkpoint ({first_line})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"clip.weights: {str(path)!r} does not hold a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"{source}: weights do not fit the configured CLIP model: {str(error).splitlines()[0]}"
        ) from error
    return model


def load_clip(model_name: str, weights: str | Path) -> nn.Module:
    """open_clip model ``model_name`` with the state_dict from the local file ``weights``."""
    return load_state(
        create_clip(model_name), read_state_dict(weights), f"clip.weights {str(weights)!r}"
    )


def to_clip_checkpoint(model: nn.Module, model_name: str) -> dict:
    return {
        "model_name": model_name,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }


def from_clip_checkpoint(checkpoint: dict, source: str = "clip checkpoint") -> nn.Module:
    return load_state(create_clip(checkpoint["model_name"]), checkpoint["state_dict"], source)


def preprocess_config(model: nn.Module) -> dict:
    """Input size, mean and std the model was trained with (open_clip's per-model preprocess
    cfg)."""
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return {
        "size": int(size),
        "mean": tuple(cfg.get("mean", _open_clip().OPENAI_DATASET_MEAN)),
        "std": tuple(cfg.get("std", _open_clip().OPENAI_DATASET_STD)),
    }
