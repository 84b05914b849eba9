"""Reading the shared JPEG 2000 CT series: ``unet_monai.io.DicomSeriesReader`` (through MONAI's ``LoadImage``, as the
bundle reads it) against SimpleITK's ``ImageSeriesReader`` in the same run; prints median times, the ratio and
whether the voxels agree.

    python benchmarks/bench_dicom.py             # about 1 minute on 2 cores
    python benchmarks/bench_dicom.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from monai.transforms import LoadImage
from timing import timed

from unet_monai.io import DicomSeriesReader

SERIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "totalsegmentator-examples" / "example_ct_dicom"


def read_ours() -> np.ndarray:
    return np.asarray(LoadImage(reader=DicomSeriesReader(), image_only=True)(str(SERIES)))


def read_sitk() -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(SERIES)))
    return sitk.GetArrayFromImage(reader.Execute())  # (slices, rows, columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if not SERIES.is_dir():
        raise SystemExit(f"bench_dicom.py: the shared series is not at {SERIES}")
    ours, reference = read_ours(), read_sitk()
    # MONAI's DICOM layout is (columns, rows, slices); SimpleITK's array is (slices, rows, columns)
    same = bool(np.array_equal(ours.astype(np.float64), np.transpose(reference, (2, 1, 0)).astype(np.float64)))
    t_ours = timed(read_ours, args.repeats, warmup=1)
    t_sitk = timed(read_sitk, args.repeats, warmup=1)
    print(json.dumps({"series": SERIES.name, "shape": list(ours.shape), "ours_s": t_ours, "simpleitk_s": t_sitk,
                      "ratio_ours_over_sitk": t_ours / t_sitk, "voxels_equal": same}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
