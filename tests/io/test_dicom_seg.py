"""write_dicom_seg on the real 3-slice CT of ../shared/data/dcmqi-ct-seg, checked with highdicom and dcmqi's SEG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

hd = pytest.importorskip("highdicom", reason="DICOM SEG needs the 'dicom' extra (highdicom)")
sitk = pytest.importorskip("SimpleITK")

from unet_monai.io import DicomSeriesReader  # noqa: E402
from unet_monai.io.dicom_seg import write_dicom_seg  # noqa: E402

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dcmqi-ct-seg"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared DICOM SEG data not found at {DATA}")


def liver_label() -> np.ndarray:
    """liver_seg.nrrd on the reader's grid: (columns, rows, slices), slices in ascending z like the reader."""
    image = sitk.ReadImage(str(DATA / "liver_seg.nrrd"))
    assert image.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    return np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))


def source_uids() -> list[str]:
    return [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in sorted((DATA / "ct-3slice").iterdir())]


def test_seg_references_sources_and_matches_the_label(tmp_path):
    path = write_dicom_seg(liver_label(), DATA / "ct-3slice", tmp_path / "liver.dcm", {1: "liver"})
    seg = hd.seg.segread(path)
    sources = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in (DATA / "ct-3slice").iterdir()}
    assert seg.number_of_frames == 3
    referenced = {
        frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for frame in seg.PerFrameFunctionalGroupsSequence
    }
    assert referenced == set(sources)
    assert (
        seg.ReferencedSeriesSequence[0].SeriesInstanceUID
        == pydicom.dcmread(next(iter(sources.values()))).SeriesInstanceUID
    )
    assert seg.SegmentSequence[0].SegmentLabel == "liver"
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert seg.SeriesDescription == "unet_monai segmentation"

    uids = source_uids()
    ours = seg.get_pixels_by_source_instance(uids, segment_numbers=[1], ignore_spatial_locations=True)
    theirs = hd.seg.segread(DATA / "liver.dcm").get_pixels_by_source_instance(
        uids, segment_numbers=[1], ignore_spatial_locations=True
    )
    np.testing.assert_array_equal(ours, theirs)  # dcmqi's SEG of the same label, frame for frame
    assert [int(f.sum()) for f in ours] == [35220, 35645, 36233]  # 01.dcm, 02.dcm, 03.dcm


def test_several_labels_become_numbered_segments(tmp_path):
    label = liver_label().astype(np.uint8)
    label[:50, :50, :] = 7  # a second structure, value 7
    path = write_dicom_seg(label, DATA / "ct-3slice", tmp_path / "two.dcm", {1: "liver", 7: "marker"})
    seg = hd.seg.segread(path)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "marker"]
    marker = seg.get_pixels_by_source_instance(source_uids(), segment_numbers=[2], ignore_spatial_locations=True)
    assert int(marker.sum()) == 50 * 50 * 3


def test_bad_inputs_are_refused_and_nothing_is_written(tmp_path):
    label = liver_label()
    with pytest.raises(ValueError, match="grid of series"):
        write_dicom_seg(label[:, :, :2], DATA / "ct-3slice", tmp_path / "a.dcm", {1: "liver"})
    with pytest.raises(ValueError, match="no name for label values"):
        write_dicom_seg(label, DATA / "ct-3slice", tmp_path / "b.dcm", {2: "other"})
    with pytest.raises(ValueError, match="no foreground"):
        write_dicom_seg(np.zeros_like(label), DATA / "ct-3slice", tmp_path / "c.dcm", {1: "liver"})
    with pytest.raises(ValueError, match="over its source file"):
        write_dicom_seg(label, DATA / "ct-3slice", DATA / "ct-3slice" / "01.dcm", {1: "liver"})
    assert list(tmp_path.iterdir()) == []


def test_reader_settings_choose_the_series(tmp_path):
    reader = DicomSeriesReader(modality="CT")
    path = write_dicom_seg(liver_label(), DATA / "ct-3slice", tmp_path / "ct.dcm", {1: "liver"}, reader=reader)
    assert hd.seg.segread(path).Modality == "SEG"
