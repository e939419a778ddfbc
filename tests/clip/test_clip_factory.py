"""The CLIP factory: project configs, local-only weights and clear errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from cgd_kedro.clip.factory import (
    EMBEDDED_CLIP,
    create_clip,
    from_clip_checkpoint,
    load_clip,
    to_clip_checkpoint,
)
from cgd_kedro.clip.zero_shot import clip_preprocess


def test_embedded_clip_config_is_registered_and_small():
    model = create_clip(EMBEDDED_CLIP)
    assert model.visual.image_size == (32, 32) or model.visual.image_size == 32
    # a conv tower learns the world far faster than a ViT
    assert type(model.visual).__name__ == "ModifiedResNet"
    assert sum(p.numel() for p in model.parameters()) < 15_000_000


def test_unknown_model_name_is_named():
    with pytest.raises(ValueError, match=r"clip\.model_name: unknown open_clip model 'nope'"):
        create_clip("nope")


def test_missing_weights_file_gives_the_intended_error(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"clip\.weights: .*missing\.safetensors.*does not exist"
    ):
        load_clip(EMBEDDED_CLIP, tmp_path / "missing.safetensors")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_weights_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    model = create_clip(EMBEDDED_CLIP)
    path = tmp_path / f"clip{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(
        {"state_dict": state}, path
    )
    loaded = load_clip(EMBEDDED_CLIP, path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    rebuilt = from_clip_checkpoint(to_clip_checkpoint(model, EMBEDDED_CLIP))
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in state.items())


def test_foreign_or_corrupt_weights_are_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors at all")
    with pytest.raises(ValueError, match="not a readable CLIP checkpoint"):
        load_clip(EMBEDDED_CLIP, bad)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="weights do not fit"):
        load_clip(EMBEDDED_CLIP, foreign)


def test_preprocess_resizes_crops_and_normalises():
    images = torch.full((2, 3, 32, 48), 255, dtype=torch.uint8)
    x = clip_preprocess(images, 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert x.shape == (2, 3, 16, 16)
    assert torch.allclose(x, torch.full_like(x, 2.0), atol=1e-4)  # (1 - 0.5) / 0.25
