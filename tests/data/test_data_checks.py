"""Bad stage arguments are refused in one line before any work: nothing read, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from asl_recognition.data.publish import publish_dataset
from asl_recognition.data.raw import validate_raw
from asl_recognition.data.split import check_split
from asl_recognition.image_size import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, check_image_size


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
        ((0.7, -0.15, 0.45), "--split: -0.15 is below the smallest allowed value 0"),
        ((float("nan"), 0.15, 0.15), "--split: nan is not a finite number"),
        ((float("inf"), 0.15, 0.15), "--split: inf is not a finite number"),
        ((0.7, 0.3), "needs three numbers"),
        (("a", "b", "c"), "--split: 'a' is not a number"),
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
        (0, "below the smallest allowed value"),
        (-5, "below the smallest allowed value"),
        (15, "below the smallest allowed value"),
        (1025, "above the largest allowed value"),
        (15000, "above the largest allowed value"),
        (100000, "above the largest allowed value"),
    ],
)
def test_bad_image_size_is_refused_first(asl_workspace: Path, size: int, bound: str) -> None:
    """Typed by the same converter as the command line (``options.settle``), before any work."""
    message = _refused(
        lambda: publish_dataset(image_size=size, progress=False),
        f"--image-size: {size} is {bound}",
        asl_workspace,
    )
    assert message.endswith("16" if "smallest" in bound else f"{MAX_IMAGE_SIZE}")


def test_a_stage_types_text_changes_as_the_command_line_does(asl_workspace: Path) -> None:
    """A change given as text (a config file, the web UI) reaches the stage typed: the split
    check sees numbers, so it refuses the empty val split, not the type."""
    _refused(
        lambda: publish_dataset(split="1,0,0.5", image_size="64", progress=False),
        "the val split.s. would be empty",
        asl_workspace,
    )


def test_the_publish_bound_is_the_training_bound() -> None:
    smallest = min(MIN_IMAGE_SIZE.values())
    assert check_image_size(smallest) == smallest and check_image_size(MAX_IMAGE_SIZE)
    for model, low in MIN_IMAGE_SIZE.items():
        assert check_image_size(low, model) == low
        with pytest.raises(ValueError, match=f"image size {low - 1} is too small for {model}"):
            check_image_size(low - 1, model)
    with pytest.raises(ValueError, match="not a whole number"):
        check_image_size(64.5)


@pytest.mark.parametrize(
    "workers, match",
    [
        (-1, "--workers: -1 is below the smallest allowed value 1"),
        (0, "--workers: 0 is below the smallest allowed value 1"),
        (2.5, "--workers: 2.5 is not a whole number"),
        ("two", "--workers: 'two' is not a number"),
    ],
)
def test_bad_workers_are_refused_first(
    asl_workspace: Path, sample_dir: Path, workers, match: str
) -> None:
    _refused(lambda: publish_dataset(workers=workers, progress=False), match, asl_workspace)
    _refused(
        lambda: validate_raw(sample_dir, workers=workers, progress=False), match, asl_workspace
    )


def test_negative_min_per_class_is_refused_first(asl_workspace: Path, sample_dir: Path) -> None:
    _refused(
        lambda: validate_raw(sample_dir, min_per_class=-3, progress=False),
        "--min-per-class: -3 is below the smallest allowed value 0",
        asl_workspace,
    )
