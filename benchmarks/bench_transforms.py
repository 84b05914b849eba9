"""Elastic deformation speed: ours against MONAI, TorchIO and elasticdeform, and the augmentation chain
against one training step of the bundle's default network.

Milliseconds per sample (image + label deformed together) at equal field smoothness:

- 2D 512x512: ours, a 3x3 control grid with Gaussian sigma 10 px (the paper), against MONAI
  ``Rand2DElasticd`` with the same control-grid spacing (256 px) and offsets up to 10 px;
- 3D 128^3: ours (3x3x3 grid, sigma 10) against MONAI ``Rand3DElasticd``, which smooths a dense noise field
  with a Gaussian: equal smoothness is taken as a smoothing sigma of spacing / (2 sqrt 2) = 22.6 voxels
  (the correlation length of a cubic interpolation over a 64-voxel grid); MONAI's cheaper sigma 8 is
  printed too;
- TorchIO ``RandomElasticDeformation`` (B-spline through SimpleITK, 4 control points per axis, the
  fewest it takes) and ``elasticdeform.deform_random_grid`` (points=3, sigma=10) where they import.

Then rotation and scaling joined to the deformation (one interpolation) against a second one by MONAI's
``RandAffined``; and the paper's border weight map (cached once per label) against its definition, one distance
transform per cell over the whole image, on ISBI 2012 labels (../shared/data) and the synthetic 2D and 3D sets.

    python benchmarks/bench_transforms.py            # about 2 minutes on 2 cores
    python benchmarks/bench_transforms.py --quick    # smaller sizes: checks that it runs
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bundle_step import bundle_parser, bundle_train_step
from monai.transforms import Compose, Rand2DElasticd, Rand3DElasticd, RandAffined
from PIL import Image
from scipy import ndimage
from timing import timed

from unet_monai.data import synthetic_em_volume
from unet_monai.transforms import RandElasticGridd, border_weight_map

ISBI_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012" / "train" / "label"


def timed_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds, after one warm-up call."""
    return 1e3 * timed(fn, repeats, warmup=1)


def sample(shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    image = torch.rand(1, *shape)
    return {"image": image, "label": (image > 0.5).to(torch.uint8)}


def ours(shape: tuple[int, ...]) -> Callable[[dict], dict]:
    return RandElasticGridd(["image", "label"], prob=1.0, grid_size=3, sigma=10.0, mode=["bilinear", "nearest"])


def monai_elastic(shape: tuple[int, ...], smooth_sigma: float | None = None) -> Callable[[dict], dict]:
    keys, mode = ["image", "label"], ["bilinear", "nearest"]
    if len(shape) == 2:
        spacing = [(s - 1) / 2 for s in shape]  # 3 control points across the image, as ours
        return Rand2DElasticd(keys, spacing=spacing, magnitude_range=(10, 10), prob=1.0, mode=mode)
    return Rand3DElasticd(keys, sigma_range=(smooth_sigma, smooth_sigma), magnitude_range=(10, 10), prob=1.0, mode=mode)


def torchio_elastic(shape: tuple[int, ...]) -> Callable[[dict], Any] | str:
    try:
        import torchio as tio
    except ImportError as err:
        return f"not installed ({err})"
    spatial = shape if len(shape) == 3 else (*shape, 1)
    image = tio.ScalarImage(tensor=torch.rand(1, *spatial))
    subject = tio.Subject(image=image, label=tio.LabelMap(tensor=(image.data > 0.5).to(torch.uint8)))
    displacement = (10.0, 10.0, 10.0 if len(shape) == 3 else 0.0)
    transform = tio.RandomElasticDeformation(num_control_points=4, max_displacement=displacement, locked_borders=0)
    return lambda _: transform(subject)


def elasticdeform_elastic(shape: tuple[int, ...]) -> Callable[[dict], Any] | str:
    try:
        import elasticdeform
    except Exception as err:  # noqa: BLE001 - an import of a compiled module can fail in many ways (numpy ABI)
        return f"not importable ({type(err).__name__}: {str(err).splitlines()[0][:60]})"
    import numpy as np

    image = np.random.rand(*shape).astype(np.float32)
    label = (image > 0.5).astype(np.uint8)
    return lambda _: elasticdeform.deform_random_grid([image, label], sigma=10, points=3, order=[1, 0])


def compare(shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    data = sample(shape)
    results: dict[str, float] = {}
    ours_ms = timed_ms(lambda: ours(shape)(data), repeats)
    results["ours"] = ours_ms
    label = "x".join(map(str, shape))
    print(f"\n{label}: ours {ours_ms:8.1f} ms/sample")
    baselines: list[tuple[str, Callable[[dict], Any] | str]] = []
    if len(shape) == 2:
        baselines.append(("MONAI Rand2DElasticd (equal grid spacing)", monai_elastic(shape)))
    else:
        equal = (shape[0] - 1) / 2 / (2 * math.sqrt(2))
        baselines.append((f"MONAI Rand3DElasticd (sigma {equal:.1f}, equal smoothness)", monai_elastic(shape, equal)))
        baselines.append(("MONAI Rand3DElasticd (sigma 8, rougher)", monai_elastic(shape, 8.0)))
    baselines.append(("TorchIO RandomElasticDeformation", torchio_elastic(shape)))
    baselines.append(("elasticdeform.deform_random_grid", elasticdeform_elastic(shape)))
    for name, fn in baselines:
        if isinstance(fn, str):
            print(f"  {name:<52} skipped: {fn}")
            continue
        ms = timed_ms(lambda fn=fn: fn(data), max(1, repeats // 2))
        results[name] = ms
        print(f"  {name:<52} {ms:8.1f} ms/sample   ours is {ms / ours_ms:5.1f}x faster")
    return results


def rotation_and_scaling(shape: tuple[int, ...], repeats: int) -> None:
    """Rotation (up to 30 degrees about each axis) and scaling (0.8-1.2) with the deformation: ours in its one
    interpolation (``rotate_range``, ``scale_range``) against ours followed by MONAI's ``RandAffined``."""
    data = sample(shape)
    keys, mode = ["image", "label"], ["bilinear", "nearest"]
    plain = ours(shape)
    joined = RandElasticGridd(keys, prob=1.0, sigma=10.0, mode=mode, rotate_range=0.5236, scale_range=0.2)
    affine = RandAffined(keys, prob=1.0, rotate_range=0.5236, scale_range=0.2, mode=mode, padding_mode="reflection")
    plain_ms = timed_ms(lambda: plain(data), repeats)
    joined_ms = timed_ms(lambda: joined(data), repeats)
    chained_ms = timed_ms(lambda: affine(plain(data)), repeats)
    label = "x".join(map(str, shape))
    print(
        f"\n{label} with rotation and scaling: ours in one interpolation {joined_ms:.1f} ms/sample (deformation "
        f"alone {plain_ms:.1f}); ours + MONAI RandAffined {chained_ms:.1f} ms: {chained_ms / joined_ms:.1f}x"
    )


def augmentation_chain(repeats: int) -> None:
    """The bundle's random transforms on one cached sample against one default train step."""
    parser = bundle_parser()
    dataset = parser.get_parsed_content("train::dataset")
    random_chain = Compose(parser.get_parsed_content("train::random_transforms"))
    cached = dataset._cache[0]  # the deterministic part, as the CacheDataset holds it

    def run_chain() -> None:
        random_chain(dict(cached))

    per_sample = timed_ms(run_chain, repeats * 4)
    _, train_step, info = bundle_train_step(parser)
    step_ms = timed_ms(train_step, repeats)
    print(
        f"\nbundle augmentation chain (random transforms of train.json on a cached image): {per_sample:.1f} ms per "
        f"training sample; default train step {step_ms:.0f} ms for {info['batch']} samples"
    )
    print(f"  one sample's augmentation = {100 * per_sample / step_ms:.1f} % of one train step (goal: < 25 %)")


def weight_map_by_definition(label: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """The paper's border term as defined: every cell's distance map over the whole image (scipy), the two
    smallest per pixel; what a direct implementation computes."""
    cells, num = ndimage.label(label == 0)
    d1 = np.full(label.shape, np.inf)
    d2 = np.full(label.shape, np.inf)
    for index in range(1, num + 1):
        distance = ndimage.distance_transform_edt(cells != index)
        d2 = np.minimum(d2, np.maximum(d1, distance))
        d1 = np.minimum(d1, distance)
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    border[cells > 0] = 0.0
    return border


def weight_maps(repeats: int, quick: bool) -> None:
    """``border_weight_map`` (cell_labels [0], as train.json) against the definition, ms per label."""
    labels: list[tuple[str, np.ndarray]] = []
    if ISBI_LABELS.is_dir():
        isbi = np.asarray(Image.open(sorted(ISBI_LABELS.glob("*.png"))[0]))
        labels.append(("ISBI 2012 512x512", (isbi > 127).astype(np.uint8) ^ 1))  # white cells -> 0, membrane 1
    else:
        print(f"\nweight map: {ISBI_LABELS} not found, ISBI row skipped")
    for shape in ((256, 256), (32, 32, 32) if quick else (96, 96, 64)):
        labels.append((f"synthetic {'x'.join(map(str, shape))}", synthetic_em_volume(shape, seed=0)[1]))
    for name, label in labels:
        cells = ndimage.label(label == 0)[1]
        ours_ms = timed_ms(lambda label=label: border_weight_map(label, cell_labels=[0], class_weights=None), repeats)
        line = f"\nweight map, {name} ({cells} cells): ours {ours_ms:.0f} ms"
        if label.ndim == 2 or quick:  # the definition takes minutes on the 3D volume
            reference_ms = timed_ms(lambda label=label: weight_map_by_definition(label), max(1, repeats // 2))
            line += f", definition {reference_ms:.0f} ms, ours faster by {reference_ms / ours_ms:.1f}x"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    compare((128, 128) if args.quick else (512, 512), repeats)
    compare((32, 32, 32) if args.quick else (128, 128, 128), repeats)
    for shape in ((128, 128), (32, 32, 32)) if args.quick else ((512, 512), (128, 128, 128)):
        rotation_and_scaling(shape, repeats)
    weight_maps(repeats, args.quick)
    augmentation_chain(repeats)


if __name__ == "__main__":
    main()
