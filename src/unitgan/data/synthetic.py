"""A built-in two-domain data set generated in code, with a ground-truth translation for every scene.

A scene is a few shapes (circle, square, triangle) with positions and sizes. It is rendered in two styles:

- domain A, "sketch": one grey channel, black outlines on a white background;
- domain B, "paint": colour, each shape filled and shaded from top-left to bottom-right, over a beige
  background with a fixed stripe texture. With ``palette='single'`` (the default) every shape is painted
  red; with ``palette='kind'`` the colour depends on the shape's kind (circle red, square green, triangle
  blue), a much harder, semantic mapping that an unsupervised model learns slowly.

Training scenes of A and B are drawn independently (unpaired); the test split renders the *same* scenes in
both styles, so ``test A[i]`` translated to B can be compared with ``test B[i]`` pixel by pixel.

Multimodal ground truth (``modes=K`` > 1, ``data.synthetic_modes``): a paint scene has K valid renderings,
mode k with its own background and paint colours (mode 0 is the rendering above). Each B image shows one
mode, drawn per scene at random; :meth:`SyntheticDomain.multimodal_pair` gives, for a held-out scene, the
sketch and all K renderings. The modes differ by more than 0.1 (on the [0, 1] scale) in some channel at
almost every pixel, so a translation matches at most one of them under the demo's pixel accuracy.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

KINDS = ("circle", "square", "triangle")
PAINT = torch.tensor([[0.85, 0.15, 0.15], [0.15, 0.70, 0.20], [0.15, 0.30, 0.90]])  # per kind, RGB in [0, 1]
PALETTES = ("single", "kind")
BACKGROUND = torch.tensor([0.93, 0.87, 0.74])
# Mode k paints on MODE_BACKGROUND[k]; its shapes take MODE_PAINT[(j + k) % 6], j = 0 ('single') or the
# shape's kind ('kind'). Row 0 of each is the rendering of mode 0, the only one when modes = 1.
MODE_PAINT = torch.cat([PAINT, torch.tensor([[0.95, 0.80, 0.10], [0.55, 0.20, 0.75], [0.95, 0.55, 0.15]])])
MODE_BACKGROUND = torch.stack(
    [
        BACKGROUND,  # beige
        torch.tensor([0.55, 0.75, 0.95]),  # sky blue
        torch.tensor([0.25, 0.27, 0.32]),  # slate
        torch.tensor([0.80, 0.60, 0.85]),  # lilac
        torch.tensor([0.55, 0.92, 0.62]),  # mint
        torch.tensor([0.45, 0.25, 0.20]),  # brown
    ]
)
MAX_MODES = len(MODE_BACKGROUND)
_SUPERSAMPLE = 3


def random_scene(generator: torch.Generator, max_shapes: int = 2) -> list[tuple[int, float, float, float]]:
    """[(kind, cx, cy, r)] in unit coordinates; shapes may overlap (drawn in order)."""
    n = int(torch.randint(1, max_shapes + 1, (1,), generator=generator))
    scene = []
    for _ in range(n):
        kind, cx, cy, r = torch.rand(4, generator=generator).tolist()
        r = 0.2 + 0.12 * r
        scene.append((int(kind * 3) % 3, r + (1 - 2 * r) * cx, r + (1 - 2 * r) * cy, r))
    return scene


def _sdf(kind: int, x: torch.Tensor, y: torch.Tensor, r: float) -> torch.Tensor:
    """Signed distance (unit coordinates, negative inside) of a shape centred at the origin."""
    if kind == 0:
        return torch.sqrt(x * x + y * y) - r
    if kind == 1:
        s = 0.8 * r
        dx, dy = x.abs() - s, y.abs() - s
        outside = torch.sqrt(dx.clamp(min=0) ** 2 + dy.clamp(min=0) ** 2)
        return outside + torch.maximum(dx, dy).clamp(max=0)
    # equilateral triangle pointing up, circumradius r (three half-planes; exact enough for drawing)
    d = r * 0.5
    n = [(0.0, 1.0), (math.sqrt(3) / 2, -0.5), (-math.sqrt(3) / 2, -0.5)]
    yy = -y  # image y grows downwards
    return torch.stack([x * nx + yy * ny - d for nx, ny in n]).amax(0)


def render(
    scene: list[tuple[int, float, float, float]], size: int, style: str, palette: str = "single", mode: int = 0
) -> torch.Tensor:
    """Render a scene as 'sketch' [1, S, S] or 'paint' [3, S, S] in mode ``mode``, values in [-1, 1]."""
    s = size * _SUPERSAMPLE
    coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    if style == "sketch":
        img = torch.ones(1, s, s)
        width = 1.2 / size  # outline about 2.4 pixels wide
        for kind, cx, cy, r in scene:
            d = _sdf(kind, x - cx, y - cy, r)
            img[0][d < 0] = 1.0  # a later shape hides the outline of an earlier one below it
            img[0][d.abs() < width] = 0.0
    elif style == "paint":
        stripes = 0.04 * torch.sin((x + y) * 2 * math.pi * 6)
        img = (MODE_BACKGROUND[mode].view(3, 1, 1) + stripes).expand(3, s, s).clone()
        for kind, cx, cy, r in scene:
            d = _sdf(kind, x - cx, y - cy, r)
            shade = 1.15 - 0.35 * ((x - cx) + (y - cy) + 2 * r) / (4 * r)  # light from the top left
            paint = MODE_PAINT[((kind if palette == "kind" else 0) + mode) % MAX_MODES]
            colour = (paint.view(3, 1, 1) * shade).clamp(0, 1)
            inside = (d < 0).expand(3, s, s)
            img[inside] = colour[inside]
    else:
        raise ValueError(f"unknown style '{style}'")
    img = torch.nn.functional.avg_pool2d(img[None], _SUPERSAMPLE)[0]
    return img * 2 - 1


class SyntheticDomain(Dataset):
    """One domain of the synthetic pair. ``split='train'`` scenes differ between A and B (unpaired);
    ``split='test'`` scenes are the same for both domains (index i of A and of B is one scene).

    ``modes`` (1..MAX_MODES): renderings per paint scene; image i of B shows mode :meth:`mode` (i)."""

    def __init__(
        self,
        domain: str,
        split: str,
        size: int,
        length: int,
        seed: int = 0,
        max_shapes: int = 2,
        palette: str = "single",
        modes: int = 1,
    ):
        if not 1 <= modes <= MAX_MODES:
            raise ValueError(f"synthetic modes must be in 1..{MAX_MODES}, got {modes}")
        self.modes = modes
        self.style = "sketch" if domain == "a" else "paint"
        self.channels = 1 if domain == "a" else 3
        self.size = size
        self.length = length
        self.max_shapes = max_shapes
        self.palette = palette
        # scene seeds: train A, train B and test live in disjoint ranges of 2^29 scenes each. torch's CPU
        # generator keeps only the low 32 bits of a seed, so everything stays below 2^32.
        if length > 1 << 29:
            raise ValueError("at most 2^29 synthetic scenes per split")
        offset = {"train": {"a": 0, "b": 1 << 29}, "test": {"a": 1 << 30, "b": 1 << 30}}[split][domain]
        self.base = offset + seed * 0x9E3779B1  # another seed shifts all ranges together

    def __len__(self) -> int:
        return self.length

    def scene_and_mode(self, index: int) -> tuple[list[tuple[int, float, float, float]], int]:
        """Scene ``index`` and the mode its paint rendering shows (drawn after the scene: 0 when modes = 1)."""
        g = torch.Generator().manual_seed((self.base + index) % (1 << 32))
        scene = random_scene(g, self.max_shapes)
        mode = int(torch.randint(self.modes, (1,), generator=g)) if self.modes > 1 else 0
        return scene, mode

    def scene(self, index: int) -> list[tuple[int, float, float, float]]:
        return self.scene_and_mode(index)[0]

    def mode(self, index: int) -> int:
        return self.scene_and_mode(index)[1]

    def __getitem__(self, index):
        index = index[0] if isinstance(index, tuple) else index  # no augmentation: scenes are random already
        scene, mode = self.scene_and_mode(index)
        return render(scene, self.size, self.style, self.palette, mode)

    def ground_truth(self, index: int, other_domain: str) -> torch.Tensor:
        """The same scene rendered in the other domain's style (in the scene's own mode)."""
        scene, mode = self.scene_and_mode(index)
        return render(scene, self.size, "sketch" if other_domain == "a" else "paint", self.palette, mode)

    def multimodal_pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scene ``index`` as the sketch [1, S, S] and all its paint renderings [modes, 3, S, S], mode k at k.

        For the test split, the sketch is ``test A[index]``: the input whose K right answers these are."""
        scene = self.scene(index)
        paints = [render(scene, self.size, "paint", self.palette, k) for k in range(self.modes)]
        return render(scene, self.size, "sketch"), torch.stack(paints)
