"""fingerprint_datalist on real NIfTI files: RAS geometry, orientations, class counts, foreground intensities."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from phantoms import ANISO_CASES

from unet_monai.planning import fingerprint_datalist, ras_spacing_and_shape


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "PSR", "ASL", "ILP"], ids=lambda c: c)
def test_ras_spacing_and_shape_undoes_the_stored_orientation(axcodes: str) -> None:
    ras = nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), np.diag([0.5, 0.8, 3.0, 1.0]))
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(tuple(axcodes))
    )
    stored = ras.as_reoriented(transform)
    spacing, shape, codes = ras_spacing_and_shape(stored.affine, stored.shape)
    assert codes == axcodes
    assert shape == [5, 6, 7]
    assert spacing == pytest.approx([0.5, 0.8, 3.0])


def test_fingerprint_reports_each_case_in_ras_axes(aniso_datalist: Path) -> None:
    fp = fingerprint_datalist(aniso_datalist, progress=False)
    assert fp["spatial_dims"] == 3 and fp["in_channels"] == 1
    assert [c["orientation"] for c in fp["cases"]] == ["LPS", "RAS", "PSR"]
    for case, written in zip(fp["cases"], ANISO_CASES):
        assert case["shape"] == list(written["ras_shape"])
        assert case["spacing"] == pytest.approx(list(written["ras_spacing"]))
    assert fp["median_spacing"] == pytest.approx([0.8, 0.8, 5.0])
    assert fp["median_shape"] == [60, 60, 12]
    assert fp["modality"] == {"0": "CT"} and fp["labels"] == {"0": "background", "1": "box", "2": "ball"}


def test_fingerprint_counts_classes_and_foreground_intensities(aniso_datalist: Path) -> None:
    fp = fingerprint_datalist(aniso_datalist, progress=False)
    labels = [np.asarray(nib.load(aniso_datalist.parent / f"case{i}_seg.nii.gz").dataobj) for i in range(3)]
    images = [np.asarray(nib.load(aniso_datalist.parent / f"case{i}_0000.nii.gz").dataobj) for i in range(3)]
    for case, label in zip(fp["cases"], labels):
        assert case["class_counts"] == {str(v): int((label == v).sum()) for v in (0, 1, 2)}
    assert fp["class_counts"] == {str(v): sum(int((lab == v).sum()) for lab in labels) for v in (0, 1, 2)}
    (stats,) = fp["foreground_intensity"]
    foreground = np.concatenate([img[lab > 0] for img, lab in zip(images, labels)])
    assert stats["num_samples"] == 3 * 10000
    assert stats["percentile_99_5"] == pytest.approx(200.0)  # the ball: 2 % of the foreground, all at 200
    assert stats["min"] >= foreground.min() and stats["max"] <= foreground.max()
    assert stats["mean"] == pytest.approx(foreground.mean(), abs=2.0)


def test_fingerprint_of_two_channel_cases(datalist_writer: Callable[..., Path]) -> None:
    cases = [{"ras_shape": (20, 20, 10), "ras_spacing": (1.0, 1.0, 2.0), "channels": 2, "seed": s} for s in (0, 1)]
    fp = fingerprint_datalist(datalist_writer(cases, modality={"0": "CT", "1": "MR"}), progress=False)
    assert fp["in_channels"] == 2
    first, second = fp["foreground_intensity"]
    assert second["percentile_99_5"] == pytest.approx(first["percentile_99_5"] + 100.0)


def test_a_label_value_the_datalist_does_not_name_is_refused(datalist_writer: Callable[..., Path]) -> None:
    path = datalist_writer(ANISO_CASES[:1], labels={"0": "background", "1": "box"})
    with pytest.raises(ValueError, match=r"case0_seg\.nii\.gz must hold only the label values .*\[0, 1\].*\[2\]"):
        fingerprint_datalist(path, progress=False)


def test_a_label_off_its_image_grid_is_refused(datalist_writer: Callable[..., Path]) -> None:
    path = datalist_writer(ANISO_CASES[:1])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), str(path.parent / "case0_seg.nii.gz"))
    with pytest.raises(ValueError, match=r"label .*case0_seg\.nii\.gz must have shape \(1, 60, 56, 12\)"):
        fingerprint_datalist(path, progress=False)


def test_a_label_on_a_flipped_grid_is_refused(datalist_writer: Callable[..., Path]) -> None:
    path = datalist_writer(ANISO_CASES[1:2])  # stored RAS, 56 x 60 x 14
    label = nib.load(path.parent / "case0_seg.nii.gz")
    flipped = label.affine @ np.diag([-1.0, 1.0, 1.0, 1.0])  # same shape, x mirrored: another grid
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj), flipped), str(path.parent / "case0_seg.nii.gz"))
    with pytest.raises(ValueError, match=r"case0_seg\.nii\.gz and image .*case0_0000\.nii\.gz must lie on one grid"):
        fingerprint_datalist(path, progress=False)


def test_no_datalist_is_refused() -> None:
    with pytest.raises(ValueError, match=r"manifest must be a datalist JSON file \(--manifest M\.json\), got None"):
        fingerprint_datalist(None)  # type: ignore[arg-type]


SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "totalsegmentator-examples"


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")
def test_fingerprint_of_a_dicom_series_folder(tmp_path: Path) -> None:
    """The JPEG 2000 CT series (0.977 x 0.977 x 2 mm, stored LPS) with its TotalSegmentator spleen moved onto the
    series' grid as our reader reads it (SOURCE.md: label[i, j] is DICOM pixel (row 511 - j, column i))."""
    from monai.transforms import LoadImage

    from unet_monai.io import DicomSeriesReader

    series = LoadImage(reader=DicomSeriesReader(), image_only=True)(str(SHARED / "example_ct_dicom"))
    seg = np.asarray(nib.load(SHARED / "example_seg_dicom.nii.gz").dataobj)[:, ::-1]
    spleen = (seg == 1).astype(np.uint8)
    nib.save(nib.Nifti1Image(spleen, series.affine.numpy()), str(tmp_path / "spleen.nii.gz"))
    datalist = {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"},
                "training": [{"image": str(SHARED / "example_ct_dicom"), "label": "spleen.nii.gz"}]}  # fmt: skip
    (tmp_path / "ct.json").write_text(json.dumps(datalist))
    fp = fingerprint_datalist(tmp_path / "ct.json", progress=False)
    (case,) = fp["cases"]
    assert case["orientation"] == "LPS" and case["shape"] == [512, 512, 20]
    assert case["spacing"] == pytest.approx([0.976562, 0.976562, 2.0])
    assert case["class_counts"]["1"] == int(spleen.sum())
    assert fp["foreground_intensity"][0]["mean"] == pytest.approx(80.0, abs=15.0)  # SOURCE.md: spleen 80 HU


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")
def test_label_transform_lets_the_plan_see_the_labels_training_sees() -> None:
    """The spleen-only datalist keeps TotalSegmentator's 117-class files and maps them in memory (its overlay's
    ``stages::labels``): without that mapping the fingerprint refuses the file, naming it; with it, two classes."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    repo = Path(__file__).resolve().parents[2]
    manifest = repo / "data_manifests" / "totalsegmentator_ct_spleen.json"
    with pytest.raises(ValueError, match="example_seg"):
        fingerprint_datalist(manifest, progress=False)
    overlay = ConfigParser()
    overlay.read_config(
        [
            str(repo / "bundles" / "unet" / "plan.json"),
            str(repo / "data_manifests" / "overlays" / "totalsegmentator_ct_spleen.json"),
        ]
    )
    mapping = Compose(overlay.get_parsed_content("stages::labels"))
    found = fingerprint_datalist(manifest, progress=False, label_transform=mapping)
    assert set(found["class_counts"]) == {"0", "1"} and found["class_counts"]["1"] > 0
