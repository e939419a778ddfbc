"""The embedded world: shapes, determinism, disjoint parts, captions and argument checks."""

from __future__ import annotations

import re

import pytest
import torch

from cgd_kedro.data import world
from cgd_kedro.data.world import (
    BACKGROUNDS,
    CLASS_NAMES,
    COLOUR_NAMES,
    SIZES,
    captions_for,
    generate_images,
    generate_world,
)


@pytest.fixture(scope="module")
def small_world():
    return generate_world(
        seed=7, n_train=48, n_test=24, n_captions=40, image_size=16, difficulty=0.5
    )


def test_generate_images_shapes_dtypes_and_attribute_ranges():
    images = generate_images(200, seed=3, image_size=16, difficulty=0.7)
    assert set(images) == {"images", "labels", "attr_colour", "attr_size", "attr_background"}
    assert images["images"].dtype == torch.uint8
    assert images["images"].shape == (200, 3, 16, 16)
    for key in ("labels", "attr_colour", "attr_size", "attr_background"):
        assert images[key].dtype == torch.int64
        assert images[key].shape == (200,)
    assert images["labels"].min() >= 0 and images["labels"].max() <= len(CLASS_NAMES) - 1
    assert images["attr_colour"].min() >= 0 and images["attr_colour"].max() <= len(COLOUR_NAMES) - 1
    assert set(images["attr_size"].tolist()) == {0, 1}
    assert (
        images["attr_background"].min() >= 0
        and images["attr_background"].max() <= len(BACKGROUNDS) - 1
    )
    # All 10 classes appear in 200 images, and the images are not blank.
    assert set(images["labels"].tolist()) == set(range(10))
    assert images["images"].float().std() > 10


def test_default_image_size_is_32():
    assert generate_images(2, seed=0)["images"].shape == (2, 3, 32, 32)


def test_zero_images_gives_an_empty_valid_set():
    empty = generate_images(0, seed=0, image_size=8)
    assert empty["images"].shape == (0, 3, 8, 8)
    assert empty["labels"].shape == (0,)


def test_same_seed_gives_identical_tensors_and_different_seed_differs():
    a = generate_images(32, seed=11, image_size=16)
    b = generate_images(32, seed=11, image_size=16)
    c = generate_images(32, seed=12, image_size=16)
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["images"], c["images"])
    assert not torch.equal(a["labels"], c["labels"])


def test_difficulty_changes_the_rendering_but_not_the_attributes():
    easy = generate_images(16, seed=5, image_size=16, difficulty=0.0)
    hard = generate_images(16, seed=5, image_size=16, difficulty=1.0)
    assert torch.equal(easy["labels"], hard["labels"])
    assert torch.equal(easy["attr_colour"], hard["attr_colour"])
    assert not torch.equal(easy["images"], hard["images"])


def test_multi_chunk_rendering_is_deterministic_and_complete(monkeypatch):
    monkeypatch.setattr(world, "_CHUNK_SIZE", 3)  # 8 images -> chunks of 3, 3 and 2
    first = generate_images(8, seed=1, image_size=16)
    second = generate_images(8, seed=1, image_size=16)
    assert torch.equal(first["images"], second["images"])
    # Every image, including the short last chunk, is rendered rather than left uninitialised.
    assert bool((first["images"].flatten(1).float().std(1) > 1).all())
    assert not torch.equal(first["images"][:3], first["images"][3:6])


def _pairwise_disjoint(a: torch.Tensor, b: torch.Tensor) -> bool:
    fa, fb = a.flatten(1), b.flatten(1)
    same = (fa.unsqueeze(1) == fb.unsqueeze(0)).all(-1)
    return not bool(same.any())


def test_world_parts_are_pairwise_disjoint(small_world):
    train, test, corpus, captions = small_world
    assert train["images"].shape == (48, 3, 16, 16)
    assert test["images"].shape == (24, 3, 16, 16)
    assert corpus["images"].shape == (40, 3, 16, 16)
    assert len(captions) == 40
    assert _pairwise_disjoint(train["images"], test["images"])
    assert _pairwise_disjoint(train["images"], corpus["images"])
    assert _pairwise_disjoint(test["images"], corpus["images"])


def test_growing_one_part_does_not_change_the_others(small_world):
    train, _test, corpus, captions = small_world
    train2, test2, corpus2, captions2 = generate_world(
        seed=7, n_train=48, n_test=50, n_captions=40, image_size=16, difficulty=0.5
    )
    for key in train:
        assert torch.equal(train[key], train2[key]), key
    for key in corpus:
        assert torch.equal(corpus[key], corpus2[key]), key
    assert captions == captions2
    assert test2["images"].shape[0] == 50
    # A different world seed changes the train part.
    other = generate_world(seed=8, n_train=48, n_test=1, n_captions=1, image_size=16)[0]
    assert not torch.equal(train["images"], other["images"])


def _words(caption: str) -> list[str]:
    return re.findall(r"[a-z]+", caption)


def test_captions_name_the_class_and_the_attributes(small_world):
    _, _, corpus, captions = small_world
    with_colour = 0
    for i, caption in enumerate(captions):
        shape = CLASS_NAMES[corpus["labels"][i]]
        colour = COLOUR_NAMES[corpus["attr_colour"][i]]
        size = SIZES[corpus["attr_size"][i]]
        background = BACKGROUNDS[corpus["attr_background"][i]]
        words = _words(caption)
        # Exactly one class word, and it is the image's class (word
        # match: 'checkered' contains 'red').
        assert [w for w in words if w in CLASS_NAMES] == [shape], caption
        assert [w for w in words if w in COLOUR_NAMES and w != colour] == [], caption
        assert [w for w in words if w in SIZES and w != size] == [], caption
        assert [w for w in words if w in BACKGROUNDS and w != background] == [], caption
        # Every template but the generic 'a picture of a <shape>' names the colour.
        if caption == f"a picture of a {shape}":
            continue
        assert colour in words, caption
        with_colour += 1
    assert with_colour >= len(captions) // 2


def test_captions_for_spot_check_exact_strings():
    image_set = {
        "labels": torch.tensor([CLASS_NAMES.index("star"), CLASS_NAMES.index("heart")]),
        "attr_colour": torch.tensor([COLOUR_NAMES.index("red"), COLOUR_NAMES.index("cyan")]),
        "attr_size": torch.tensor([0, 1]),
        "attr_background": torch.tensor([BACKGROUNDS.index("striped"), BACKGROUNDS.index("plain")]),
    }
    captions = captions_for(image_set, seed=0)
    allowed_0 = {
        t.format(size="small", colour="red", shape="star", background="striped")
        for t in world._CAPTION_TEMPLATES
    }
    allowed_1 = {
        t.format(size="large", colour="cyan", shape="heart", background="plain")
        for t in world._CAPTION_TEMPLATES
    }
    assert captions[0] in allowed_0
    assert captions[1] in allowed_1
    assert captions_for(image_set, seed=0) == captions


def test_all_ten_classes_appear_in_train():
    train = generate_images(120, seed=123, image_size=8)
    counts = torch.bincount(train["labels"], minlength=10)
    assert counts.shape == (10,) and bool((counts > 0).all())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 4, "difficulty": 1.5}, r"world\.difficulty"),
        ({"n": 4, "difficulty": -0.1}, r"world\.difficulty"),
        ({"n": -1}, r"world size.*-1"),
        ({"n": 2.5}, r"world size"),
        ({"n": 4, "image_size": 4}, r"world\.image_size"),
    ],
)
def test_generate_images_argument_errors_name_the_parameter(kwargs, match):
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match=match):
        generate_images(n, seed=0, **kwargs)


def test_generate_world_argument_errors():
    with pytest.raises(ValueError, match=r"world\.difficulty.*1\.5"):
        generate_world(seed=0, n_train=2, n_test=2, n_captions=2, difficulty=1.5)
    with pytest.raises(ValueError, match=r"world size.*-3"):
        generate_world(seed=0, n_train=2, n_test=-3, n_captions=2)
