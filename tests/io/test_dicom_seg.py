"""write_dicom_seg on the real series of ../shared/data, checked with highdicom, dcmqi's SEG and dciodvfy.

Every SEG written here goes through the ``dciodvfy`` fixture (tests/io/conftest.py): 0 errors, warnings printed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

hd = pytest.importorskip("highdicom", reason="DICOM SEG needs the 'dicom' extra (highdicom)")
sitk = pytest.importorskip("SimpleITK")

from unet_monai.io import DicomSeriesReader  # noqa: E402
from unet_monai.io.dicom_seg import seg_sources, write_dicom_seg  # noqa: E402

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DATA = SHARED / "dcmqi-ct-seg"
CT_J2K = SHARED / "totalsegmentator-examples" / "example_ct_dicom"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared DICOM SEG data not found at {DATA}")


def liver_label() -> np.ndarray:
    """liver_seg.nrrd on the reader's grid: (columns, rows, slices), slices in ascending z like the reader."""
    image = sitk.ReadImage(str(DATA / "liver_seg.nrrd"))
    assert image.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    return np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))


def source_uids() -> list[str]:
    return [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in sorted((DATA / "ct-3slice").iterdir())]


def test_seg_references_sources_and_matches_the_label(tmp_path, dciodvfy):
    path = write_dicom_seg(liver_label(), DATA / "ct-3slice", tmp_path / "liver.dcm", {1: "liver"})
    dciodvfy(path)
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


def test_several_labels_become_numbered_segments(tmp_path, dciodvfy):
    label = liver_label().astype(np.uint8)
    label[:50, :50, :] = 7  # a second structure, value 7
    path = write_dicom_seg(label, DATA / "ct-3slice", tmp_path / "two.dcm", {1: "liver", 7: "marker"})
    dciodvfy(path)
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


def test_reader_settings_choose_the_series(tmp_path, dciodvfy):
    reader = DicomSeriesReader(modality="CT")
    path = write_dicom_seg(liver_label(), DATA / "ct-3slice", tmp_path / "ct.dcm", {1: "liver"}, reader=reader)
    dciodvfy(path)
    assert hd.seg.segread(path).Modality == "SEG"


@pytest.mark.skipif(not CT_J2K.is_dir(), reason=f"shared TotalSegmentator DICOM series not found at {CT_J2K}")
def test_deidentified_series_gets_its_uids_filled_in_and_a_valid_seg(tmp_path, dciodvfy, caplog):
    """The TotalSegmentator series has empty SOPClassUID, SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID."""
    label = np.zeros((512, 512, 20), dtype=np.uint8)
    label[200:300, 150:260, 3:15] = 1
    with caplog.at_level("WARNING", logger="unet_monai.io.dicom_seg"):
        path = write_dicom_seg(label, CT_J2K, tmp_path / "box.dcm", {1: "box"})
    dciodvfy(path)
    for name in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        assert name in caplog.text  # each repair logged
    seg = hd.seg.segread(path)
    metas = [pydicom.dcmread(f, stop_before_pixels=True).file_meta for f in sorted(CT_J2K.iterdir())]
    referenced = {
        frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for frame in seg.PerFrameFunctionalGroupsSequence
    }
    assert referenced <= {m.MediaStorageSOPInstanceUID for m in metas}  # the instances' own UIDs, not new ones
    assert len(referenced) == 12  # slices 3..14 hold the box
    assert "filled in" in seg.ContentDescription
    derivation = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].DerivationDescription
    assert "StudyInstanceUID" in derivation and seg.StudyInstanceUID in derivation
    # the generated study and series UIDs come from the series' content: the same on every run
    again = seg_sources(CT_J2K)
    assert again.datasets[0].StudyInstanceUID == seg.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == again.datasets[0].SeriesInstanceUID != ""
    frames = seg.get_pixels_by_source_instance(
        [str(ds.SOPInstanceUID) for ds in again.datasets[3:15]], segment_numbers=[1]
    )
    assert int(frames.sum()) == 100 * 110 * 12


def test_source_without_any_sop_class_is_refused_naming_it(tmp_path):
    folder = tmp_path / "ct"
    folder.mkdir()
    for f in sorted((DATA / "ct-3slice").iterdir()):
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = ""
        ds.file_meta.MediaStorageSOPClassUID = ""
        ds.save_as(folder / f.name)
    with pytest.raises(ValueError, match=r"ct/0[123]\.dcm: SOPClassUID must be set"):
        write_dicom_seg(liver_label(), folder, tmp_path / "out.dcm", {1: "liver"})
    assert not (tmp_path / "out.dcm").exists()


def test_dciodvfy_fixture_reports_errors(tmp_path, dciodvfy):
    """The validator the SEG tests rely on fails on a SEG with an empty Type 1 attribute."""
    path = write_dicom_seg(liver_label(), DATA / "ct-3slice", tmp_path / "liver.dcm", {1: "liver"})
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = ""
    ds.save_as(tmp_path / "broken.dcm")
    with pytest.raises(pytest.fail.Exception, match="StudyInstanceUID"):
        dciodvfy(tmp_path / "broken.dcm")


def test_seg_of_a_single_file_series(tmp_path, dciodvfy):
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    label = np.zeros((128, 128, 1), dtype=np.uint8)
    label[40:80, 30:90, 0] = 1
    written = write_dicom_seg(label, path, tmp_path / "small.dcm", {1: "box"})
    dciodvfy(written)
    seg = hd.seg.segread(written)
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    assert int(seg.get_pixels_by_source_instance([uid], segment_numbers=[1]).sum()) == 40 * 60


def test_seg_of_a_multiframe_series_is_refused_naming_the_variant(tmp_path):
    from pydicom.data import get_testdata_file

    path = get_testdata_file("eCT_Supplemental.dcm")
    with pytest.raises(ValueError, match=r"eCT_Supplemental\.dcm: DICOM SEG output .* enhanced multi-frame"):
        seg_sources(path)
    with pytest.raises(ValueError, match="enhanced multi-frame"):
        write_dicom_seg(np.ones((512, 512, 2), np.uint8), path, tmp_path / "e.dcm", {1: "all"})
    assert not (tmp_path / "e.dcm").exists()


def test_seg_of_one_acquisition_references_only_its_slices(tmp_path, dciodvfy):
    """The 3-slice CT written as two echoes in one series: the SEG of echo 2 references echo 2's files only."""
    folder = tmp_path / "echoes"
    folder.mkdir()
    echo2 = set()
    for f in sorted((DATA / "ct-3slice").iterdir()):
        for echo in (1, 2):
            ds = pydicom.dcmread(f)
            ds.EchoNumbers = echo
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.save_as(folder / f"{echo}_{f.name}")
            if echo == 2:
                echo2.add(ds.SOPInstanceUID)
    with pytest.raises(ValueError, match="EchoNumbers=1 \\(3 slices\\); EchoNumbers=2 \\(3 slices\\)"):
        write_dicom_seg(liver_label(), folder, tmp_path / "x.dcm", {1: "liver"})
    reader = DicomSeriesReader(acquisition={"EchoNumbers": 2})
    path = write_dicom_seg(liver_label(), folder, tmp_path / "echo2.dcm", {1: "liver"}, reader=reader)
    dciodvfy(path)
    seg = hd.seg.segread(path)
    referenced = {
        frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for frame in seg.PerFrameFunctionalGroupsSequence
    }
    assert referenced == echo2
