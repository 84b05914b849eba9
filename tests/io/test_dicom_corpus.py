"""The reader over every file and folder of pydicom's test files and the pydicom-data package.

Each case must end as read (voxels and geometry equal to SimpleITK's where SimpleITK reads it: spacing 1e-3 mm,
origin 0.01 mm) or as a refusal (ValueError, RuntimeError, FileNotFoundError) whose message names the file or
folder. No other exception, no silent disagreement. The counts are printed (``-s``) for BENCHMARKS.md.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.transforms import LoadImage

from unet_monai.io import DicomSeriesReader

sitk = pytest.importorskip("SimpleITK")


def corpus() -> list[Path]:
    """Every file and every folder (non-recursive series) of the two corpora."""
    roots = [Path(pydicom.data.get_testdata_file("CT_small.dcm", download=False) or "").parent]
    try:
        import data_store  # the pydicom-data package

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    roots = sorted({r for r in roots if r.is_dir()})
    cases: set[Path] = set()
    for root in roots:
        cases.update(p for p in root.rglob("*") if p.is_file() or p.is_dir())
    return sorted(cases)


def sitk_reads(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """SimpleITK's voxels ``(x, y, z)`` and LPS affine, or None where it does not read the case as one volume."""
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            ids = reader.GetGDCMSeriesIDs(str(path))
            if len(ids) != 1:
                return None
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), ids[0]))
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError:
        return None
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
        return None
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)), affine


def why(err: Exception) -> str:
    """A refusal's kind, for the counts."""
    text = str(err)
    for needle, kind in (
        ("is not a DICOM file", "not DICOM"),
        ("reads a DICOM folder or file", "not DICOM"),
        ("without plane geometry", "no plane geometry"),
        ("SamplesPerPixel must be 1", "colour"),
        ("not an image", "not an image: SR, RT plan, SEG, ..."),
        ("holds no DICOM image series", "folder without an image series"),
        ("matching series", "several series"),
        ("cannot decode", "pixels not decodable"),
        ("truncated", "CT/MR/PET without its mandatory geometry: stripped or truncated"),
    ):
        if needle in text:
            return kind
    return "damaged or inconsistent header"


def same_as(image: object, other: Path) -> bool:
    twin = LoadImage(image_only=True)(str(other), reader=DicomSeriesReader())
    return bool(
        np.array_equal(np.asarray(image), np.asarray(twin))
        and np.allclose(np.asarray(image.affine), np.asarray(twin.affine))  # type: ignore[attr-defined]
    )


def test_every_corpus_case_is_read_right_or_refused_naming_it(same_volume):
    cases = corpus()
    if len(cases) < 100:
        pytest.skip(f"pydicom's test files not found (got {len(cases)} cases)")
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    counts: Counter[str] = Counter()
    problems = []
    logging.disable(logging.WARNING)
    try:
        for path in cases:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    image = LoadImage(image_only=True)(str(path), reader=DicomSeriesReader())
                except (ValueError, RuntimeError, FileNotFoundError) as err:
                    named = str(path) in str(err) or path.name in str(err)
                    counts[f"refused ({why(err)})" if named else "refused WITHOUT naming the case"] += 1
                    if not named:
                        problems.append(f"{path}: refusal does not name it: {err}")
                    continue
                except Exception as err:  # anything else is a crash of the reader
                    counts["crashed"] += 1
                    problems.append(f"{path}: {type(err).__name__}: {err}")
                    continue
                reference = sitk_reads(path)
            if reference is None:
                counts[f"read ({image.meta['DicomVariant']}), SimpleITK does not read it"] += 1
                continue
            voxels, affine = reference
            if image.meta["DicomVariant"] == "rtdose":  # SimpleITK keeps the stored integers
                voxels = voxels * float(pydicom.dcmread(path, stop_before_pixels=True).DoseGridScaling)
            try:
                same_volume(image, voxels, affine)
            except AssertionError as err:
                twin = path.with_name(path.name.replace("_expb", ""))
                if twin != path and twin.is_file() and same_as(image, twin):
                    # GDCM misreads 32-bit big-endian RT Dose; ours equals the little-endian copy of the same file
                    counts["read (big endian), equal to its little-endian twin, SimpleITK misreads it"] += 1
                    continue
                counts["read, DISAGREES with SimpleITK"] += 1
                problems.append(f"{path}: {str(err)[:400]}")
                continue
            counts[f"read ({image.meta['DicomVariant']}), equal to SimpleITK"] += 1
    finally:
        logging.disable(logging.NOTSET)
    print(f"\n{len(cases)} cases: " + "; ".join(f"{n} {what}" for what, n in sorted(counts.items())))
    assert not problems, "\n".join(problems)
