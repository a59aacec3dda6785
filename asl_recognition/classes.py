"""The 29 ASL alphabet labels, in the one index order every stage shares."""

from __future__ import annotations

LETTERS: tuple[str, ...] = tuple(chr(c) for c in range(ord("A"), ord("Z") + 1))
CLASSES: tuple[str, ...] = LETTERS + ("del", "nothing", "space")


def read_class_file(path: str) -> list[str]:
    """Class lists travel as text files so that ONNX, Triton labels and training agree.

    A byte-order mark (Windows editors write one) is dropped: read as text it became part of
    the first label, and Triton answered ``\ufeffA``. Text that is not UTF-8 is one
    ``ValueError`` naming the file.
    """
    try:
        with open(path, encoding="utf-8-sig") as fh:
            names = [line.strip() for line in fh if line.strip()]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: class names are not UTF-8 text ({exc.reason})") from None
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate class names")
    return names


def write_class_file(path: str, classes: list[str] | tuple[str, ...]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(classes) + "\n")
