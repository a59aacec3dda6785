"""The image sizes the project's models take: one bound for publishing and for training.

Published images are resized to one side; a dataset published at a size no architecture can
take (below its total stride, or above the project's largest input) would be useless.
"""

from __future__ import annotations

# Each architecture's total stride: below it the last feature map is less than one cell (the
# cnn then fails outright; torchvision backbones run on a 1x1 map made mostly of padding).
MIN_IMAGE_SIZE = {"cnn": 16, "resnet18": 32, "mobilenet_v3_small": 32}
# The project's largest model input: 1024 px RGB is 3 MB per decoded image, far above what the
# models train at; a published dataset at a size no model takes would be useless.
MAX_IMAGE_SIZE = 1024


class ImageSizeError(ValueError):
    """An image side no model of the project can take."""


def check_image_size(
    image_size: int, model: str | None = None, error: type[ValueError] = ImageSizeError
) -> int:
    """The side as an int, or ``error`` saying why no model (or ``model``) can use it.

    One bound for publishing (``model`` None: the smallest side any architecture takes) and for
    training (the architecture's own), so a dataset is never published at a size nothing trains.
    """
    try:
        size = int(image_size)
        if size != float(image_size):
            raise ValueError
    except (TypeError, ValueError):
        raise error(f"image size {image_size!r} is not a whole number of pixels") from None
    if model is not None and model not in MIN_IMAGE_SIZE:
        raise error(f"unknown model {model!r}; choose one of {', '.join(MIN_IMAGE_SIZE)}")
    name = model or min(MIN_IMAGE_SIZE, key=MIN_IMAGE_SIZE.__getitem__)
    low = MIN_IMAGE_SIZE[name]
    target = model or "every model"
    if size < low:
        need = f"it needs at least {low} px" if model else f"the smallest ({name}) needs {low} px"
        raise error(
            f"image size {size} is too small for {target}: {need} "
            f"(its {low}x downsampling leaves less than one feature cell)"
        )
    if size > MAX_IMAGE_SIZE:
        raise error(
            f"image size {size} is too large for {target}: the project's bound is "
            f"{MAX_IMAGE_SIZE} px"
        )
    return size
