"""Bad stage arguments are refused in one line before any work: nothing read, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from asl_recognition.data.publish import publish_dataset
from asl_recognition.data.raw import validate_raw
from asl_recognition.data.split import check_split
from asl_recognition.imageio import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, check_image_size


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def _refused(call, match: str, workspace: Path) -> str:
    before = _tree(workspace)
    with pytest.raises(ValueError, match=match) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    assert _tree(workspace) == before  # refused before the store or a report was touched
    return message


@pytest.mark.parametrize(
    "split, match",
    [
        ((1, 0, 0), "the val, test split.s. would be empty"),
        ((0.8, 0.2, 0), "the test split.s. would be empty"),
        ((0, 0, 0), "all fractions are 0"),
        ((0.7, -0.15, 0.45), "cannot be negative"),
        ((float("nan"), 0.15, 0.15), "finite"),
        ((float("inf"), 0.15, 0.15), "finite"),
        ((0.7, 0.3), "needs three numbers"),
        (("a", "b", "c"), "not numbers"),
    ],
)
def test_bad_split_is_refused_first(asl_workspace: Path, split, match: str) -> None:
    # the workspace holds no raw version: a check made after resolving it would say so instead
    _refused(lambda: publish_dataset(split=split, progress=False), match, asl_workspace)


def test_check_split_survives_fractions_whose_sum_overflows() -> None:
    """1e308 x 3 sums to inf: the shares must still be a third each, not 0/0 downstream."""
    assert check_split(["1e308", "1e308", "1e308"]) == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match="the val split.* would be empty"):
        check_split([1e308, 5e-324, 1e308])


def test_check_split_normalises_good_fractions() -> None:
    assert check_split((7, 1.5, 1.5)) == pytest.approx([0.7, 0.15, 0.15])
    assert check_split([0.7, 0.15, 0.15]) == pytest.approx([0.7, 0.15, 0.15])


@pytest.mark.parametrize(
    "size, bound",
    [
        (0, "too small"),
        (-5, "too small"),
        (15, "too small"),
        (1025, "too large"),
        (15000, "too large"),
        (100000, "too large"),
    ],
)
def test_bad_image_size_is_refused_first(asl_workspace: Path, size: int, bound: str) -> None:
    message = _refused(
        lambda: publish_dataset(image_size=size, progress=False),
        f"image size {size} is {bound} for every model",
        asl_workspace,
    )
    assert ("16 px" if bound == "too small" else f"{MAX_IMAGE_SIZE} px") in message


def test_the_publish_bound_is_the_training_bound() -> None:
    smallest = min(MIN_IMAGE_SIZE.values())
    assert check_image_size(smallest) == smallest and check_image_size(MAX_IMAGE_SIZE)
    for model, low in MIN_IMAGE_SIZE.items():
        assert check_image_size(low, model) == low
        with pytest.raises(ValueError, match=f"image size {low - 1} is too small for {model}"):
            check_image_size(low - 1, model)
    with pytest.raises(ValueError, match="not a whole number"):
        check_image_size(64.5)


@pytest.mark.parametrize("workers", [-1, 0, 2.5, "two"])
def test_bad_workers_are_refused_first(asl_workspace: Path, sample_dir: Path, workers) -> None:
    match = "--workers must be a whole number of at least 1"
    _refused(lambda: publish_dataset(workers=workers, progress=False), match, asl_workspace)
    _refused(
        lambda: validate_raw(sample_dir, workers=workers, progress=False), match, asl_workspace
    )


def test_negative_min_per_class_is_refused_first(asl_workspace: Path, sample_dir: Path) -> None:
    _refused(
        lambda: validate_raw(sample_dir, min_per_class=-3, progress=False),
        "--min-per-class must be a whole number of at least 0, not -3",
        asl_workspace,
    )
