"""The suspicious models (reference recipe, averaged runs, seeded) and the entropy-map figure."""

from __future__ import annotations

import pytest
import torch

from cgd_kedro.cgd.entropy_map import POISON_COLOUR, plot_entropy_map
from cgd_kedro.cgd.split import SplitConfig, cgd_split
from cgd_kedro.cgd.suspicious import SuspiciousConfig, suspicious_logits


def test_reference_recipe_is_the_default_and_overrides_merge():
    config = SuspiciousConfig.from_params({})
    t = config.training
    assert (config.runs, t.epochs, t.lr, t.weight_decay, t.batch_size) == (3, 5, 3e-4, 5e-4, 256)
    assert (t.optimizer, t.schedule, t.augment) == ("adam", "constant", False)
    assert SuspiciousConfig.from_params({"training": {"epochs": 2}}).training.optimizer == "adam"
    with pytest.raises(ValueError, match=r"suspicious\.runs"):
        SuspiciousConfig.from_params({"runs": 0})
    with pytest.raises(
        ValueError, match=r"suspicious\.training\.epoch: unknown parameter; did you mean 'epochs'"
    ):
        SuspiciousConfig.from_params({"training": {"epoch": 2}})
    with pytest.raises(ValueError, match="optimizer"):
        SuspiciousConfig.from_params({"training": {"optimizer": "lbfgs"}})


def _trigger_data(n=240, seed=0):
    """Noise images of 4 classes by colour; a quarter carry a white corner and label 0."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(4, (n,), generator=g)
    images = torch.randint(0, 120, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    images[torch.arange(n), labels % 3] += 100
    poison = torch.zeros(n, dtype=torch.bool)
    poison[: n // 4] = True
    images[poison, :, -3:, -3:] = 255
    labels[poison] = 0
    return images, labels, poison


def test_suspicious_logits_are_seeded_averaged_and_fit_the_trigger_first():
    images, labels, poison = _trigger_data()
    config = SuspiciousConfig.from_params(
        {"runs": 2, "training": {"epochs": 3, "batch_size": 32, "lr": 3e-3}}
    )
    kwargs = dict(
        num_classes=4, mean=(0.5,) * 3, std=(0.25,) * 3, device=torch.device("cpu"), seed=3
    )
    logits, histories = suspicious_logits(images, labels, config, **kwargs)
    again, _ = suspicious_logits(images, labels, config, **kwargs)
    assert logits.shape == (240, 4) and len(histories) == 2 and len(histories[0]) == 3
    assert torch.equal(logits, again)
    nll = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert nll[poison].mean() < nll[~poison].mean()  # the trigger is the easy shortcut


def test_cgd_split_uses_only_given_labels_and_logits():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(3, (100,), generator=g)
    result = cgd_split(
        labels, torch.randn(100, 3, generator=g), torch.randn(100, 3, generator=g), SplitConfig(), g
    )
    assert set(result) == {"r_clip", "r_sus", "clean", "triggered", "clean_indices"}
    assert result["r_clip"].sort().values.tolist() == [(i + 1) / 100 for i in range(100)]
    with pytest.raises(ValueError, match="100 labels but 99 CLIP"):
        cgd_split(labels, torch.randn(99, 3), torch.randn(100, 3), SplitConfig(), g)
    with pytest.raises(ValueError, match=r"split\.sigma: unknown parameter; did you mean"):
        SplitConfig.from_params({"sigma": 0.1})


def test_entropy_map_has_scatter_marginals_threshold_lines_and_ground_truth_colours():
    r = torch.linspace(0.01, 1, 50, dtype=torch.float64)
    poison = torch.zeros(50, dtype=torch.bool)
    poison[:5] = True
    figure = plot_entropy_map(r, r.flip(0), poison, sigma1=0.2, sigma2=0.1, title="t")
    scatter, top, right = figure.axes
    assert [line.get_xdata()[0] for line in scatter.get_lines()[:2]] == [0.8, 0.9]
    assert [line.get_ydata()[0] for line in scatter.get_lines()[2:]] == [0.2, 0.1]
    labels = [t.get_text() for t in scatter.get_legend().get_texts()]
    assert labels == ["clean (45)", "poisoned (5)"]
    assert tuple(scatter.collections[1].get_facecolor()[0][:3]) == pytest.approx(
        tuple(int(POISON_COLOUR[i : i + 2], 16) / 255 for i in (1, 3, 5))
    )
    assert len(top.patches) == len(right.patches) == 100


def test_figures_never_touch_pyplots_global_state():
    """The platform draws in several threads:
    figures must be plain Figure objects, never pyplot's."""
    import matplotlib.pyplot as plt

    from cgd_kedro.clip.figures import plot_defense_curves
    from cgd_kedro.reporting.render import figure_to_data_uri

    before = plt.get_fignums()
    r = torch.linspace(0.01, 1, 20)
    figures = [
        plot_entropy_map(r, r, None, sigma1=0.2, sigma2=0.1),
        plot_defense_curves(
            {"abd": [{"epoch": 1, "test_clean_acc": 0.8, "test_asr": 0.1}]},
            before={"clean_acc": 0.8, "asr": 1.0},
        ),
    ]
    assert figure_to_data_uri(figures[0]).startswith("data:image/png;base64,")
    assert plt.get_fignums() == before and all(f.canvas.manager is None for f in figures)


def test_building_a_clip_keeps_the_root_logger_on_and_drops_only_open_clips_random_init_notice(
    caplog,
):
    import logging

    from cgd_kedro.clip.factory import EMBEDDED_CLIP, create_clip

    with caplog.at_level(logging.INFO):
        create_clip(EMBEDDED_CLIP)
        logging.getLogger().warning("another root message")
    assert not logging.getLogger().disabled
    messages = [r.getMessage() for r in caplog.records]
    assert "another root message" in messages and not any(
        "No pretrained weights loaded" in m for m in messages
    )
