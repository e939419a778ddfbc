"""The model cache:
a training is reused only when its data, parameters, seed and device are the same."""

from __future__ import annotations

import logging
import subprocess
import sys

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


def entries(cache_dir) -> list[str]:
    """The cache's entries (its ``.locks`` folder aside)."""
    return sorted(p.name for p in cache_dir.iterdir() if p.name != ".locks")


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
    assert len(entries(tmp_path)) == 1 and entries(tmp_path)[0].startswith("reference_clip-")


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
    assert trainer.calls == 5 and len(entries(tmp_path)) == 5


def test_no_cache_dir_trains_every_time_and_writes_nothing(tmp_path):
    trainer = CountingTrainer(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    assert run(None, trainer)[2] is False and run(None, trainer)[2] is False
    assert trainer.calls == 2


def test_an_unreadable_entry_is_trained_again_with_a_warning(tmp_path, caplog):
    trainer = CountingTrainer(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    run(tmp_path, trainer)
    entry = tmp_path / entries(tmp_path)[0]
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


SIDE_BY_SIDE = """
import logging, os, sys, time, torch
from pathlib import Path
from cgd_kedro.model_cache import cached_training

logging.basicConfig(level=logging.INFO)
folder = Path(sys.argv[2])

def train():
    (folder / "calls").open("a").write("trained\\n")
    # wait until the other process has arrived too, then a little longer: it is then either
    # blocked on the lock or (without one) training as well
    deadline = time.monotonic() + 60
    while len(list(folder.glob("arrived-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1)
    return {"weight": torch.arange(4.0)}, {"seconds": 1.0}

(folder / f"arrived-{os.getpid()}").touch()
tensors, info, reused = cached_training(
    folder / "cache", "reference_clip", settings={"lr": 0.1}, seed=0, device=torch.device("cpu"),
    data=[torch.zeros(2, 3, dtype=torch.uint8)], train=train,
)
print(reused, tensors["weight"].tolist())
"""


def test_runs_side_by_side_train_a_missing_entry_once(tmp_path):
    # two processes asking for the same entry at once (a grid's cells of one seed): the second
    # waits for the first's lock and reads what it saved
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SIDE_BY_SIDE, "-", str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=180) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err for _, err in outputs]
    assert (tmp_path / "calls").read_text().splitlines() == ["trained"]
    assert sorted(out.strip() for out, _ in outputs) == [
        "False [0.0, 1.0, 2.0, 3.0]",
        "True [0.0, 1.0, 2.0, 3.0]",
    ]
    waited = [err for _, err in outputs if "another run is training the same model" in err]
    assert len(waited) == 1 and len(entries(tmp_path / "cache")) == 1
