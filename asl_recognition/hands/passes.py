"""The detection passes a ``HandLandmarker`` tries, in order, until one finds a hand.

Why several (figures: bench/bench_hands_recall.py on the shared sources; why each photo was
missed: grids of the misses, looked at one by one):

- Hands that fill the frame need a wide black border before the palm detector sees a whole
  palm: a second pass with a 0.6 border (Massey crops on black: 97.7% -> 100%).
- Backlit Kaggle frames show a near-black hand that the palm detector finds but the landmark
  model rejects (presence ~0); brightened by gamma 0.35 it passes (Kaggle 89% -> 98%).
- Grayscale phone photos (Roboflow's 56): the landmark model rejects about half of the gray
  hands; coloured skin-like first, most pass (Roboflow 96% -> 98%). Colour photos skip these.

Every pass is judged by the landmark model's own presence score, not by the palm score alone,
so the palm score only proposes (0.1): no pass has put a hand on any of the 200 Kaggle
``nothing`` frames. A photo the first pass finds costs one pass, as before; only misses and
photos without a hand pay for the rest (4 passes for a colour photo, 7 for a gray one).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# The palm score only proposes a region; the landmark model's presence decides (see above).
DEFAULT_MIN_DETECTION = 0.1
DEFAULT_MIN_PRESENCE = 0.5


@dataclass(frozen=True)
class Pass:
    """One try: a black border of ``pad`` x the longer side, then pixels raised to ``gamma``.

    ``gamma`` < 1 brightens dark pixels most (the border stays black); 1 leaves them as is.
    ``tint``: a pass for grayscale photos only, which it colours skin-like first (the landmark
    model, trained on colour, rejects many gray hands); a colour photo skips it.
    """

    pad: float = 0.15
    gamma: float = 1.0
    tint: bool = False

    def applies(self, rgb: np.ndarray) -> bool:
        """Whether this pass runs on ``rgb`` (a tint pass only on a grayscale photo)."""
        return not self.tint or is_grayscale(rgb)

    def brighten(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` tinted (a tint pass) and through the gamma curve (unchanged when neither)."""
        if self.tint:
            gray = rgb.mean(axis=2, dtype=np.float32)[..., None] * np.float32(1 / 255)
            rgb = np.round(255 * gray * SKIN_TINT).astype(np.uint8)
        return rgb if self.gamma == 1.0 else _gamma_table(self.gamma)[rgb]


# Share of gray level kept per channel by a tint pass: a warm, skin-like colour.
SKIN_TINT = np.array([1.0, 0.72, 0.55], dtype=np.float32)
GRAY_TOLERANCE = 8  # a JPEG of a gray photo strays a few levels between channels
DEFAULT_PASSES = (
    Pass(0.15, 1.0),
    Pass(0.6, 1.0),
    Pass(0.15, 0.35),
    Pass(0.6, 0.35),
    Pass(0.15, 1.0, tint=True),
    Pass(0.6, 1.0, tint=True),
    Pass(0.6, 0.6, tint=True),
)
MEDIAPIPE_PASSES = (Pass(0.0, 1.0),)  # what mediapipe itself does: the photo as it is


@lru_cache(maxsize=8)
def _gamma_table(gamma: float) -> np.ndarray:
    """uint8 -> uint8 lookup of 255 * (v / 255) ** gamma, rounded."""
    values = np.arange(256, dtype=np.float64) / 255.0
    return np.round(255.0 * values**gamma).astype(np.uint8)


def is_grayscale(rgb: np.ndarray) -> bool:
    """No pixel's channels differ by more than ``GRAY_TOLERANCE`` (checked on every 4th row)."""
    sample = rgb[::4].astype(np.int16)
    spread = sample.max(axis=2) - sample.min(axis=2)
    return int(spread.max()) <= GRAY_TOLERANCE


def check_passes(passes: tuple[Pass, ...]) -> tuple[Pass, ...]:
    """Refuse an empty plan or a pass outside sane bounds, in one line."""
    passes = tuple(passes)
    if not passes:
        raise ValueError("at least one detection pass is needed")
    for step in passes:
        if not isinstance(step, Pass):
            raise ValueError(f"a detection pass must be a hands.Pass, got {step!r}")
        if not 0.0 <= step.pad <= 2.0 or not 0.1 <= step.gamma <= 3.0:
            raise ValueError(f"pass {step}: pad must lie in [0, 2] and gamma in [0.1, 3]")
    return passes
