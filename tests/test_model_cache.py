"""The model cache:
a training is reused only when its data, parameters, seed and device are the same."""

from __future__ import annotations

import logging

import torch

from cgd_kedro.model_cache import cached_training

CPU = torch.device("cpu")


class CountingTrainer:
    """A stand-in training: returns a tensor derived from its data and counts its calls."""

    def __init__(self, images: torch.Tensor):
        self.images, self.calls = images, 0

    def __call__(self):
        self.calls += 1
        return {"weight": self.images.float().mean(0, keepdim=True) + torch.randn(1)}, {
            "epochs": [{"loss": 0.5}],
            "seconds": 1.0,
        }


def run(cache_dir, trainer, *, settings=None, seed=0, images=None, captions=("a", "b")):
    images = trainer.images if images is None else images
    return cached_training(
        cache_dir,
        "reference_clip",
        settings=settings or {"lr": 0.1},
        seed=seed,
        device=CPU,
        data=[images, list(captions)],
        train=trainer,
    )


def test_the_same_inputs_reuse_the_first_training(tmp_path):
    trainer = CountingTrainer(torch.arange(24, dtype=torch.uint8).reshape(2, 3, 2, 2))
    first, info, reused = run(tmp_path, trainer)
    second, info_again, reused_again = run(tmp_path, trainer)
    assert trainer.calls == 1 and (reused, reused_again) == (False, True)
    assert torch.equal(first["weight"], second["weight"]) and info_again == info == {
        "epochs": [{"loss": 0.5}],
        "seconds": 1.0,
    }
    # one entry, no temporary file left
    assert [p.name for p in tmp_path.iterdir()] == [next(tmp_path.iterdir()).name]
    assert next(tmp_path.iterdir()).name.startswith("reference_clip-")


def test_other_parameters_seed_data_or_captions_train_again(tmp_path):
    images = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    trainer = CountingTrainer(images)
    run(tmp_path, trainer)
    run(tmp_path, trainer, settings={"lr": 0.2})
    run(tmp_path, trainer, seed=1)
    changed = images.clone()
    changed[0, 0, 0, 0] = 1
    run(tmp_path, trainer, images=changed)
    run(tmp_path, trainer, captions=("a", "c"))
    assert trainer.calls == 5 and len(list(tmp_path.iterdir())) == 5


def test_no_cache_dir_trains_every_time_and_writes_nothing(tmp_path):
    trainer = CountingTrainer(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    assert run(None, trainer)[2] is False and run(None, trainer)[2] is False
    assert trainer.calls == 2


def test_an_unreadable_entry_is_trained_again_with_a_warning(tmp_path, caplog):
    trainer = CountingTrainer(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    run(tmp_path, trainer)
    entry = next(tmp_path.iterdir())
    entry.write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING):
        tensors, _, reused = run(tmp_path, trainer)
    assert (
        trainer.calls == 2
        and reused is False
        and "ignoring the unreadable cache entry" in caplog.text
    )
    # the entry was rewritten
    assert torch.equal(run(tmp_path, trainer)[0]["weight"], tensors["weight"])
