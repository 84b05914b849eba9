"""Intensity normalisation by modality, one scheme per input channel, and the data-set foreground statistics that
the CT scheme needs.

The schemes follow nnU-Net v2 (``preprocessing/normalization/default_normalization_schemes.py``):

- ``"ct"``: clip to ``clip = [lower, upper]`` (the data set's 0.5 and 99.5 foreground percentiles, or a HU
  window), then z-score with the data set's foreground ``mean`` and ``std`` (nnU-Net's ``CTNormalization``);
- ``"window"``: a HU window ``a_min .. a_max`` scaled linearly to ``b_min .. b_max`` and clipped (MONAI's
  ``ScaleIntensityRange``, the model zoo's spleen CT recipe);
- ``"mr"``: per-case z-score over all voxels (nnU-Net's ``ZScoreNormalization``);
- ``"mr_nonzero"``: per-case z-score over the non-zero voxels, zeros stay zero (MONAI's
  ``NormalizeIntensity(nonzero=True)``);
- ``"mr_mask"``: per-case z-score with the mean and std of the voxels under a mask (a foreground or body mask
  given to the dictionary transform as ``mask_key``), applied to every voxel (nnU-Net's ``use_mask_for_norm``
  instead sets the voxels outside to 0; add ``MaskIntensityd`` after it for that);
- ``"none"``: the channel passes unchanged (as float32).

Each scheme is a JSON object (a ``dict``), so a bundle config or a planner's overlay can write it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import get_track_meta
from monai.transforms import LoadImage, NormalizeIntensity, ScaleIntensityRange, Transform
from monai.utils import convert_to_tensor

__all__ = ["NormalizeByModality", "SCHEMES", "foreground_intensity_stats", "ct_scheme"]

# scheme -> (required keys, optional keys with defaults)
SCHEMES: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "ct": (("clip", "mean", "std"), {}),
    "window": (("a_min", "a_max"), {"b_min": 0.0, "b_max": 1.0}),
    "mr": ((), {}),
    "mr_nonzero": ((), {}),
    "mr_mask": ((), {}),
    "none": ((), {}),
}


def _source(img: Any) -> str:
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj") or "(no file name)")


def _validate_scheme(index: int, scheme: Any) -> dict[str, Any]:
    """Check one scheme dict and return it with its defaults filled in."""
    where = f"schemes[{index}]"
    if not isinstance(scheme, Mapping) or "scheme" not in scheme:
        raise ValueError(f"{where} must be a dict with a 'scheme' key, got {scheme!r}.")
    name = scheme["scheme"]
    if name not in SCHEMES:
        raise ValueError(f"{where}['scheme'] must be one of {sorted(SCHEMES)}, got {name!r}.")
    required, optional = SCHEMES[name]
    missing = [k for k in required if k not in scheme]
    unknown = sorted(set(scheme) - {"scheme", *required, *optional})
    if missing or unknown:
        raise ValueError(
            f"{where} ({name!r}) must have exactly the keys {['scheme', *required]} (optional {sorted(optional)}), "
            f"got {sorted(scheme)}: missing {missing}, unknown {unknown}."
        )
    out = {**optional, **dict(scheme)}
    if name == "ct":
        clip = out["clip"]
        if not isinstance(clip, Sequence) or len(clip) != 2 or not float(clip[0]) < float(clip[1]):
            raise ValueError(f"{where}['clip'] must be [lower, upper] with lower < upper, got {clip!r}.")
        if not float(out["std"]) > 0:
            raise ValueError(f"{where}['std'] must be > 0, got {out['std']!r}.")
    if name == "window" and not float(out["a_min"]) < float(out["a_max"]):
        raise ValueError(f"{where} must have a_min < a_max, got {out['a_min']!r} and {out['a_max']!r}.")
    return out


class NormalizeByModality(Transform):
    """Normalise each channel of a ``(C, *spatial)`` image by its own scheme (module docstring), e.g. CT and MR
    channels of one co-registered case, or one CT channel.

    Uses MONAI's ``NormalizeIntensity`` for every z-score (``subtrahend``/``divisor`` for the data-set statistics)
    and ``ScaleIntensityRange`` for the window; the CT clip is a plain ``torch.clamp``, because MONAI's
    ``ClipIntensityPercentiles`` takes percentiles of each image, not the data set's, and
    ``ScaleIntensityRange(clip=True)`` clips the scaled output, not the input.

    Args:
        schemes: one dict per input channel, e.g. ``[{"scheme": "ct", "clip": [-958, 327], "mean": 82.9,
            "std": 136.9}, {"scheme": "mr_nonzero"}]``; :func:`ct_scheme` writes the CT one from
            :func:`foreground_intensity_stats`.

    Raises:
        ValueError: an unknown scheme, a missing or unknown key, ``std <= 0``, an empty clip range.

    Example::

        norm = NormalizeByModality([{"scheme": "window", "a_min": -57, "a_max": 164}])
        out = norm(ct)  # (1, H, W, D) HU -> [0, 1]
    """

    backend = NormalizeIntensity.backend

    def __init__(self, schemes: Sequence[Mapping[str, Any]]) -> None:
        if isinstance(schemes, Mapping) or not isinstance(schemes, Sequence) or len(schemes) == 0:
            raise ValueError(f"schemes must be a non-empty list of dicts, one per channel, got {schemes!r}.")
        self.schemes = [_validate_scheme(i, s) for i, s in enumerate(schemes)]

    def __call__(self, img: NdarrayOrTensor, mask: NdarrayOrTensor | None = None, name: str = "image") -> torch.Tensor:
        """``img`` ``(C, *spatial)`` -> float32 ``(C, *spatial)``, metadata kept; ``C == len(schemes)``.

        ``mask`` ``(1, *spatial)`` or ``(*spatial)``: the voxels (``!= 0``) whose statistics the ``"mr_mask"``
        channels use; ``name`` (a dictionary key) is used in the messages.
        """
        shape = tuple(int(s) for s in img.shape)
        if len(shape) < 2 or shape[0] != len(self.schemes):
            raise ValueError(
                f"{name} {_source(img)} must have {len(self.schemes)} channel(s), one per normalisation scheme "
                f"({[s['scheme'] for s in self.schemes]}), got {shape[0] if shape else 0} in shape {shape}."
            )
        out = convert_to_tensor(img, track_meta=get_track_meta())
        out = out.to(torch.float32, copy=True)  # never normalise the caller's tensor in place
        mask_t = None
        if mask is not None:
            mask_t = torch.as_tensor(mask).as_subclass(torch.Tensor)
            if mask_t.shape == (1, *shape[1:]):
                mask_t = mask_t[0]
            if tuple(mask_t.shape) != shape[1:]:
                raise ValueError(
                    f"mask {_source(mask)} must have the spatial shape {shape[1:]} of {name} {_source(img)}, got "
                    f"shape {tuple(mask_t.shape)}."
                )
            mask_t = mask_t != 0
        for c, scheme in enumerate(self.schemes):
            out[c] = self._channel(out[c].as_subclass(torch.Tensor), scheme, mask_t, f"{name} {_source(img)}", c)
        return out

    @staticmethod
    def _channel(x: torch.Tensor, scheme: dict[str, Any], mask: torch.Tensor | None, what: str, c: int) -> Any:
        """One channel ``(*spatial)`` float32 -> normalised ``(*spatial)``."""
        kind = scheme["scheme"]
        if kind == "ct":
            lower, upper = (float(v) for v in scheme["clip"])
            x = x.clamp(lower, upper)
            return NormalizeIntensity(
                subtrahend=np.asarray(float(scheme["mean"])), divisor=np.asarray(float(scheme["std"]))
            )(x)
        if kind == "window":
            a_min, a_max, b_min, b_max = (float(scheme[k]) for k in ("a_min", "a_max", "b_min", "b_max"))
            return ScaleIntensityRange(a_min, a_max, b_min, b_max, clip=True)(x)
        if kind == "mr":
            return NormalizeIntensity()(x)
        if kind == "mr_nonzero":
            return NormalizeIntensity(nonzero=True)(x)
        if kind == "mr_mask":
            if mask is None:
                raise ValueError(f"{what} channel {c} uses scheme 'mr_mask', so a mask must be given (mask_key).")
            inside = x[mask]
            if inside.numel() == 0:
                warnings.warn(
                    f"{what} channel {c}: the mask is empty; z-scoring over the whole image instead.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return NormalizeIntensity()(x)
            std = float(inside.std(unbiased=False))
            return NormalizeIntensity(
                subtrahend=np.asarray(float(inside.mean())), divisor=np.asarray(std if std > 0 else 1.0)
            )(x)
        return x  # "none"


def _as_array(item: Any, what: str, loader: LoadImage | None) -> tuple[np.ndarray, str]:
    """A case's image or label as a numpy array, loading a path with MONAI's ``LoadImage``."""
    paths = isinstance(item, (list, tuple)) and bool(item) and all(isinstance(p, (str, Path)) for p in item)
    if isinstance(item, (str, Path)) or paths:
        if loader is None:
            raise RuntimeError("loader must be given for paths.")
        name = str(item) if not paths else ", ".join(str(p) for p in item)
        return np.asarray(loader([str(p) for p in item] if paths else str(item))), name
    data = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
    return data, _source(item) if _source(item) != "(no file name)" else what


def foreground_intensity_stats(
    images: Iterable[Any],
    labels: Iterable[Any],
    num_samples: int = 10000,
    seed: int = 1234,
    ignore_index: int | None = None,
) -> list[dict[str, float]]:
    """Data-set intensity statistics per channel over the foreground (label > 0), as nnU-Net v2's fingerprint.

    Streams the cases: each is read once, and only ``num_samples`` foreground voxels per channel are kept
    (drawn with replacement by ``np.random.RandomState(seed)``, a fresh one per case, as nnU-Net's
    ``collect_foreground_intensities``), so memory is ``cases x channels x num_samples`` floats. The
    percentiles, mean and std are then those of all kept samples. A case without foreground adds nothing.

    Args:
        images: per case a channel-first image ``(C, *spatial)`` (array, tensor or MetaTensor), a path that
            MONAI's ``LoadImage`` reads (channel first), or a list of paths, one per channel (co-registered
            sequences, stacked by ``LoadImage``). Every case must have the same ``C``.
        labels: per case the label ``(1, *spatial)`` or ``(*spatial)``, or its path; same spatial shape.
        num_samples: foreground voxels kept per case and channel (nnU-Net: 10000).
        seed: seed of each case's sampler (nnU-Net: 1234).
        ignore_index: a label value that is not foreground (e.g. 255); None: every value > 0 is foreground.

    Returns:
        One dict per channel with ``mean``, ``std``, ``median``, ``min``, ``max``, ``percentile_00_5``,
        ``percentile_99_5`` (intensity units of the images) and ``num_samples`` (kept voxels in all).

    Raises:
        ValueError: differing channel counts or shapes, no foreground in any case, unequal case counts.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    samples: list[list[np.ndarray]] | None = None
    label_iter = iter(labels)
    index = -1
    for index, image_item in enumerate(images):
        try:
            label_item = next(label_iter)
        except StopIteration:
            raise ValueError(f"labels must have one entry per image, got fewer than {index + 1}.") from None
        image, image_name = _as_array(image_item, f"images[{index}]", loader)
        label, label_name = _as_array(label_item, f"labels[{index}]", loader)
        if image.ndim < 2:
            raise ValueError(f"image {image_name} must be channel first (C, *spatial), got shape {image.shape}.")
        if label.shape == image.shape[1:]:
            label = label[None]
        if label.shape != (1, *image.shape[1:]):
            raise ValueError(
                f"label {label_name} must have shape (1, *spatial) with the spatial shape {image.shape[1:]} of "
                f"image {image_name}, got {label.shape}."
            )
        if samples is None:
            samples = [[] for _ in range(image.shape[0])]
        if image.shape[0] != len(samples):
            raise ValueError(
                f"image {image_name} must have {len(samples)} channel(s) as the first case, got {image.shape[0]}."
            )
        foreground = label[0] > 0
        if ignore_index is not None:
            foreground &= label[0] != ignore_index
        rs = np.random.RandomState(seed)
        for c in range(image.shape[0]):
            voxels = image[c][foreground]
            if voxels.size:
                samples[c].append(rs.choice(voxels, num_samples, replace=True).astype(np.float64))
    if next(label_iter, None) is not None:
        raise ValueError(f"labels must have one entry per image, got more than {index + 1}.")
    if samples is None or not samples[0]:
        raise ValueError(f"images and labels must hold foreground (label > 0) voxels, got none in {index + 1} case(s).")
    stats = []
    for channel in samples:
        values = np.concatenate(channel)
        p005, median, p995 = np.percentile(values, (0.5, 50.0, 99.5))
        stats.append(
            {
                "mean": float(values.mean()),
                "std": float(values.std()),
                "median": float(median),
                "min": float(values.min()),
                "max": float(values.max()),
                "percentile_00_5": float(p005),
                "percentile_99_5": float(p995),
                "num_samples": int(values.size),
            }
        )
    return stats


def ct_scheme(stats: Mapping[str, float]) -> dict[str, Any]:
    """nnU-Net's CT scheme from one channel's :func:`foreground_intensity_stats`:
    ``{"scheme": "ct", "clip": [percentile_00_5, percentile_99_5], "mean": mean, "std": std}``."""
    return {
        "scheme": "ct",
        "clip": [float(stats["percentile_00_5"]), float(stats["percentile_99_5"])],
        "mean": float(stats["mean"]),
        "std": max(float(stats["std"]), 1e-8),
    }
