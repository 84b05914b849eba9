"""Sparse annotations from dense labels: which slices are kept, that every other voxel is the ignore value, the dtype,
the errors; a sparse datalist written to disk (affine and header kept, ignore_label set), on synthetic NIfTI files
and on the MSD spleen crop's manual label."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from unet_monai.data import (
    annotated_positions,
    slice_affine,
    slice_positions,
    sparsify_label,
    write_slice_datalist,
    write_sparse_datalist,
)
from unet_monai.data.sparse import main as sparse_main
from unet_monai.data.sparse import unlabelled_ends
from unet_monai.io import load_manifest
from unet_monai.io.manifest import manifest_ignore_label

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SPLEEN = SHARED_DATA / "msd-spleen-ct-crop"
IGNORE = 255


def box(shape=(20, 16, 12), lo=(4, 2, 3), hi=(15, 10, 10), value=1) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    label[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = value
    return label


@pytest.mark.parametrize(
    "k,expected",
    [
        (1, {0: [10], 1: [6], 2: [7]}),  # the middle slices of the box's extent 4..15, 2..10, 3..10
        (2, {0: [7, 13], 1: [4, 8], 2: [5, 9]}),
        (4, {0: [5, 8, 11, 14], 1: [3, 5, 7, 9], 2: [4, 6, 8, 10]}),
    ],
    ids=["k1", "k2", "k4"],
)
def test_positions_are_evenly_spaced_through_the_foreground_extent(k, expected):
    assert slice_positions(box(), k) == expected


def test_k_larger_than_the_extent_keeps_every_foreground_slice():
    positions = slice_positions(box(lo=(4, 2, 3), hi=(6, 10, 10)), 5, axes=(0,))
    assert positions == {0: [4, 5, 6]}


def test_no_foreground_spreads_over_the_whole_axis():
    assert slice_positions(np.zeros((10, 4, 4), dtype=np.uint8), 2, axes=(0,)) == {0: [2, 7]}


def test_seeded_positions_are_reproducible_distinct_and_in_the_extent():
    first = slice_positions(box(), 3, seed=7)
    assert first == slice_positions(box(), 3, seed=7)
    assert first != slice_positions(box(), 3, seed=8)
    for axis, (lo, hi) in enumerate([(4, 15), (2, 10), (3, 10)]):
        assert len(set(first[axis])) == 3 and all(lo <= p <= hi for p in first[axis])


def test_sparse_label_keeps_the_chosen_slices_and_ignores_the_rest():
    label = box()
    label[6:9, 3:6, 4:6] = 2
    sparse = sparsify_label(label, 2)
    positions = slice_positions(label, 2)
    kept = np.zeros(label.shape, dtype=bool)
    kept[positions[0]] = True
    kept[:, positions[1]] = True
    kept[:, :, positions[2]] = True
    assert sparse.dtype == np.uint8 and sparse.shape == label.shape
    np.testing.assert_array_equal(sparse[kept], label[kept])
    assert (sparse[~kept] == IGNORE).all()


def test_explicit_positions_and_one_axis():
    label = box()
    sparse = sparsify_label(label, 1, positions={2: [5]}, ignore_index=-1)
    np.testing.assert_array_equal(sparse[:, :, 5], label[:, :, 5])
    assert sparse.dtype == np.int16  # uint8 cannot hold -1
    assert (np.delete(sparse, 5, axis=2) == -1).all()


def test_2d_label_with_one_axis():
    label = box(shape=(12, 10, 1), lo=(2, 2, 0), hi=(9, 7, 0))[..., 0]
    sparse = sparsify_label(label, 1, axes=(0,))
    assert (sparse[6] == label[6]).all() and (np.delete(sparse, 6, axis=0) == IGNORE).all()  # middle of rows 2..9


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"k": 0}, "k must be an integer >= 1 (slices per axis), got 0."),
        ({"k": 1, "axes": (0, 3)}, "axes must be distinct spatial axes of the 3D label (0..2), got (0, 3)."),
        ({"k": 1, "axes": (1, 1)}, "axes must be distinct spatial axes of the 3D label (0..2), got (1, 1)."),
        ({"k": 1, "positions": {0: [20]}}, "positions[0] must be slice indices in 0..19, got [20]."),
        ({"k": 1, "ignore_index": 1}, "label must not hold the ignore value 1 already"),
    ],
    ids=["k0", "axis-out-of-range", "repeated-axis", "position-out-of-range", "ignore-is-a-class"],
)
def test_bad_arguments_rejected(kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        sparsify_label(box(), **kwargs)


# ------------------------------------------------------------------------------------------- sparse datalists
def write_dense_datalist(folder: Path, labels: dict | None = None, **extra) -> Path:
    """Two 3D cases (image and label NIfTI with a non-trivial affine) and a validation case, plus the datalist."""
    affine = np.array([[0.8, 0, 0, -10.0], [0, -0.8, 0, 20.0], [0, 0, 5.0, 3.0], [0, 0, 0, 1]])
    entries = []
    for i in range(3):
        (folder / "img").mkdir(parents=True, exist_ok=True)
        (folder / "seg").mkdir(parents=True, exist_ok=True)
        label = box(lo=(4 + i, 2, 3), hi=(15, 10, 10 - i))
        label[6:9, 3:6, 4:6] = 2
        nib.save(
            nib.Nifti1Image(np.random.default_rng(i).random(label.shape, dtype=np.float32), affine),
            folder / f"img/{i}.nii.gz",
        )
        nib.save(nib.Nifti1Image(label, affine), folder / f"seg/{i}.nii.gz")
        entries.append({"image": f"img/{i}.nii.gz", "label": f"seg/{i}.nii.gz", "case_id": f"case{i}"})
    content = {
        "name": "toy",
        "modality": {"0": "CT"},
        "labels": labels or {"0": "background", "1": "spleen", "2": "liver"},
        "training": entries[:2],
        "validation": entries[2:],
        **extra,
    }
    path = folder / "dense.json"
    path.write_text(json.dumps(content))
    return path


def test_write_sparse_datalist(tmp_path):
    dense = write_dense_datalist(tmp_path / "dense")
    path = write_sparse_datalist(dense, tmp_path / "sparse", k=2, axes=(0, 2))
    assert path == tmp_path / "sparse" / "datalist.json"
    data = json.loads(path.read_text())
    assert data["ignore_label"] == IGNORE and manifest_ignore_label(path) == IGNORE
    assert data["labels"] == {"0": "background", "1": "spleen", "2": "liver"} and data["modality"] == {"0": "CT"}
    assert data["name"] == "toy_sparse_k2" and data["sparse"]["k"] == 2 and data["sparse"]["axes"] == [0, 2]
    training = load_manifest(path)
    assert [item["case_id"] for item in training] == ["case0", "case1"]
    for i, item in enumerate(training):
        assert Path(item["image"]) == (tmp_path / "dense" / f"img/{i}.nii.gz").resolve()
        assert Path(item["label"]) == tmp_path / "sparse" / "labels" / "training" / f"{i}.nii.gz"
        original, written = nib.load(tmp_path / "dense" / f"seg/{i}.nii.gz"), nib.load(item["label"])
        np.testing.assert_array_equal(written.affine, original.affine)
        assert written.header.get_zooms() == original.header.get_zooms()
        assert int(written.header["sform_code"]) == int(original.header["sform_code"])
        assert int(written.header["qform_code"]) == int(original.header["qform_code"])
        assert written.get_data_dtype() == np.uint8
        dense_array = np.asanyarray(original.dataobj)
        positions = {int(a): p for a, p in data["sparse"]["annotated_slices"][f"labels/training/{i}.nii.gz"].items()}
        assert positions == slice_positions(dense_array, 2, axes=(0, 2))
        np.testing.assert_array_equal(np.asanyarray(written.dataobj), sparsify_label(dense_array, 2, axes=(0, 2)))
    (validation,) = load_manifest(path, "validation")
    assert Path(validation["label"]) == (tmp_path / "dense" / "seg/2.nii.gz").resolve()  # dense, for scoring


def test_write_sparse_datalist_takes_the_datalists_own_ignore_value(tmp_path):
    dense = write_dense_datalist(tmp_path / "dense", labels={"0": "background", "1": "a", "2": "b", "99": "ignore"})
    path = write_sparse_datalist(dense, tmp_path / "sparse", k=1, seed=3)
    assert json.loads(path.read_text())["ignore_label"] == 99
    (item, _) = load_manifest(path)
    assert set(np.unique(np.asanyarray(nib.load(item["label"]).dataobj))) == {0, 1, 2, 99}


@pytest.mark.parametrize(
    "labels,kwargs,match",
    [
        ({"0": "background", "255": "cell"}, {}, "ignore_index must not be a class of the datalist"),
        ({"0": "background", "1": "a", "2": "b"}, {"ignore_index": 1}, "ignore_index must not be a class"),
        ({"0": "background", "1": "a", "2": "b", "99": "ignore"}, {"ignore_index": 255}, "own ignore value 99"),
        ({"0": "background", "1": "a", "2": "b"}, {"splits": ("test",)}, "splits must be lists of the datalist"),
    ],
    ids=["default-255-is-a-class", "explicit-is-a-class", "disagrees-with-datalist", "unknown-split"],
)
def test_write_sparse_datalist_errors(tmp_path, labels, kwargs, match):
    dense = write_dense_datalist(tmp_path / "dense", labels=labels)
    with pytest.raises(ValueError, match=match):
        write_sparse_datalist(dense, tmp_path / "sparse", k=1, **kwargs)


def test_sparsifying_a_sparse_datalist_names_the_entry_and_file(tmp_path):
    sparse = write_sparse_datalist(write_dense_datalist(tmp_path / "dense"), tmp_path / "sparse", k=1)
    with pytest.raises(
        ValueError, match=r"sparse/datalist\.json: training\[0\] label .*0\.nii\.gz: label must not hold"
    ):
        write_sparse_datalist(sparse, tmp_path / "again", k=1)


def test_non_nifti_label_refused(tmp_path, write_nifti):
    (tmp_path / "x.png").write_bytes(b"")
    write_nifti("img.nii.gz")
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"training": [{"image": "img.nii.gz", "label": "x.png"}]}))
    with pytest.raises(ValueError, match=r"training\[0\] label must be one NIfTI file"):
        write_sparse_datalist(manifest, tmp_path / "out", k=1)


def drawn_label(shape=(20, 16, 12), slices=(4, 7)) -> np.ndarray:
    """An annotator's label file: the organ drawn on a few axial slices (axis 2), 0 everywhere else."""
    label = np.zeros(shape, dtype=np.uint8)
    for z in slices:
        label[5:12, 3:9, z] = 1
        label[6:8, 4:6, z] = 2
    return label


def write_annotated_datalist(folder: Path, annotated: list[object]) -> Path:
    """A datalist of two annotator's label files, entry i with ``annotated_slices`` ``annotated[i]`` (None: no key)."""
    affine = np.array([[0.8, 0, 0, -10.0], [0, -0.8, 0, 20.0], [0, 0, 5.0, 3.0], [0, 0, 0, 1]])
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, slices in enumerate(annotated):
        label = drawn_label(slices=(4 + i, 7))
        nib.save(
            nib.Nifti1Image(np.random.default_rng(i).random(label.shape, dtype=np.float32), affine),
            folder / f"{i}.nii.gz",
        )
        nib.save(nib.Nifti1Image(label, affine), folder / f"{i}_seg.nii.gz")
        entries.append({"image": f"{i}.nii.gz", "label": f"{i}_seg.nii.gz", "case_id": f"case{i}"})
        if slices is not None:
            entries[-1]["annotated_slices"] = slices
    path = folder / "annotated.json"
    labels = {"0": "background", "1": "spleen", "2": "vessel"}
    path.write_text(json.dumps({"name": "drawn", "labels": labels, "training": entries}))
    return path


def test_annotated_positions_lists_and_drawn():
    label = drawn_label(slices=(4, 7))
    assert annotated_positions(label, {"2": [9, 4, 7, 4]}) == {2: [4, 7, 9]}  # sorted, once each
    assert annotated_positions(label, {"2": "drawn"}) == {2: [4, 7]}  # a slice without foreground is not seen
    assert annotated_positions(label, {"2": "drawn", "0": [3]}) == {2: [4, 7], 0: [3]}


@pytest.mark.parametrize(
    "annotated,match",
    [
        ({}, "must map axes to slice indices"),
        ([4, 7], "must map axes to slice indices"),
        ({"3": [1]}, "keys must be axes of the 3D label"),
        ({"z": [1]}, "keys must be axes of the 3D label"),
        ({"2": []}, re.escape("annotated_slices[2] must be a non-empty list")),
        ({"2": [1.5]}, re.escape("annotated_slices[2] must be a non-empty list")),
        ({"2": "all"}, re.escape("annotated_slices[2] must be a non-empty list")),
        ({"1": "drawn", "2": "drawn"}, "'drawn' for one axis only"),
    ],
    ids=["empty", "not-a-mapping", "axis-3", "axis-name", "no-slices", "float", "word", "drawn-twice"],
)
def test_annotated_positions_errors(annotated, match):
    with pytest.raises(ValueError, match=match):
        annotated_positions(drawn_label(), annotated)


def test_annotated_positions_drawn_on_an_empty_label():
    with pytest.raises(ValueError, match="'drawn' but the label has no foreground"):
        annotated_positions(np.zeros((4, 4, 4), dtype=np.uint8), {"2": "drawn"})


def test_write_sparse_datalist_from_the_annotators_slices(tmp_path):
    # entry 0 names slice 9 too: labelled, background only; entry 1 lets the drawn slices be found
    manifest = write_annotated_datalist(tmp_path / "in", [{"2": [4, 7, 9]}, {"2": "drawn"}])
    path = write_sparse_datalist(manifest, tmp_path / "sparse", k=None)
    data = json.loads(path.read_text())
    assert data["name"] == "drawn_sparse" and data["ignore_label"] == IGNORE
    assert data["sparse"]["k"] is None and data["sparse"]["axes"] is None
    assert data["sparse"]["annotated_slices"] == {
        "labels/training/0_seg.nii.gz": {"2": [4, 7, 9]},
        "labels/training/1_seg.nii.gz": {"2": [5, 7]},
    }
    assert all("annotated_slices" not in entry for entry in data["training"])  # now in the label itself
    for i, (item, kept) in enumerate(zip(load_manifest(path), ([4, 7, 9], [5, 7]))):
        original = nib.load(tmp_path / "in" / f"{i}_seg.nii.gz")
        written = nib.load(item["label"])
        np.testing.assert_array_equal(written.affine, original.affine)
        dense, sparse = np.asanyarray(original.dataobj), np.asanyarray(written.dataobj)
        for z in range(dense.shape[2]):
            expected = dense[:, :, z] if z in kept else np.full(dense.shape[:2], IGNORE)
            np.testing.assert_array_equal(sparse[:, :, z], expected)


@pytest.mark.parametrize(
    "annotated,match",
    [
        ([{"2": [4, 7]}, None], r"annotated\.json: training\[1\] must name its annotated slices"),
        (
            [{"2": [4, 12]}, {"2": [5]}],
            r"training\[0\] label .*0_seg\.nii\.gz: positions\[2\] must be slice indices in 0\.\.11",
        ),
        (
            [{"2": [4]}, {"0": "drawn", "2": "drawn"}],
            r"training\[1\] label .*1_seg\.nii\.gz: .*'drawn' for one axis only",
        ),
    ],
    ids=["missing", "outside-the-volume", "drawn-twice"],
)
def test_write_sparse_datalist_from_annotated_slices_names_the_entry(tmp_path, annotated, match):
    manifest = write_annotated_datalist(tmp_path / "in", annotated)
    with pytest.raises(ValueError, match=match):
        write_sparse_datalist(manifest, tmp_path / "sparse", k=None)
    assert not (tmp_path / "sparse" / "datalist.json").exists()


def test_k_refused_for_an_annotators_datalist(tmp_path):
    manifest = write_annotated_datalist(tmp_path / "in", [None, {"2": [4, 7]}])
    with pytest.raises(ValueError, match=r"training\[1\] names its annotated slices .* give no k"):
        write_sparse_datalist(manifest, tmp_path / "sparse", k=2)
    assert not (tmp_path / "sparse" / "datalist.json").exists()


@pytest.mark.integration
def test_command_line(tmp_path):
    manifest = write_annotated_datalist(tmp_path / "in", [{"2": [4, 7, 9]}, {"2": "drawn"}])
    run = [sys.executable, "-m", "unet_monai.data.sparse", "--manifest", str(manifest)]
    proc = subprocess.run([*run, "--out_dir", str(tmp_path / "own")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "labels/training/0_seg.nii.gz: axis 2: [4, 7, 9]" in proc.stdout
    assert "labels/training/1_seg.nii.gz: axis 2: [5, 7]" in proc.stdout
    assert load_manifest(tmp_path / "own" / "datalist.json")[0]["label"].endswith("0_seg.nii.gz")
    dense = write_dense_datalist(tmp_path / "dense")
    sparse_main(["--manifest", str(dense), "--out_dir", str(tmp_path / "k2"), "--k", "2", "--axes", "0", "2"])
    data = json.loads((tmp_path / "k2" / "datalist.json").read_text())
    assert data["sparse"]["k"] == 2 and data["sparse"]["axes"] == [0, 2]
    proc = subprocess.run(
        [*run, "--out_dir", str(tmp_path / "bad"), "--ignore_label", "1"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0 and "ignore_index must not be a class" in proc.stderr


@pytest.mark.skipif(not SPLEEN.is_dir(), reason=f"shared MSD spleen crop not found at {SPLEEN}")
@pytest.mark.parametrize("k", [1, 4], ids=["k1", "k4"])
def test_msd_spleen_crop_sparse_label(tmp_path, k):
    manifest = Path(__file__).resolve().parents[2] / "data_manifests" / "msd_spleen_ct_crop.json"
    path = write_sparse_datalist(manifest, tmp_path, k=k)
    (item,) = load_manifest(path)
    original = nib.load(SPLEEN / "sub-spleen2_ct_seg-manual.nii.gz")
    written = nib.load(item["label"])
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-6)
    dense, sparse = np.asanyarray(original.dataobj), np.asanyarray(written.dataobj)
    labelled = sparse != IGNORE
    np.testing.assert_array_equal(sparse[labelled], dense[labelled])
    # k slices per axis, evenly spaced through the spleen's extent (z 3..22 of 26 slices)
    z = [s for s in range(dense.shape[2]) if labelled[:, :, s].all()]
    assert z == [3 + int((i + 0.5) * 20 / k) for i in range(k)]
    annotated = json.loads(path.read_text())["sparse"]["annotated_slices"]
    (positions,) = annotated.values()
    for axis in range(3):  # every kept slice cuts the spleen
        assert len(positions[str(axis)]) == k
        assert all((np.take(dense, index, axis=axis) == 1).any() for index in positions[str(axis)])
    assert 0 < (sparse == 1).sum() < (dense == 1).sum()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_affine_places_each_2d_voxel_where_it_lay_in_3d(axis):
    affine = np.array([[0.0, 0.0, -5.0, 12.0], [-0.8, 0.0, 0.0, 30.0], [0.0, 0.7, 0.0, -4.0], [0, 0, 0, 1]])  # PSR-like
    index = 3
    flat = slice_affine(affine, axis, index)
    others = [a for a in range(3) if a != axis]
    for i, j in [(0, 0), (2, 5), (7, 1)]:
        voxel = np.zeros(3)
        voxel[axis], voxel[others[0]], voxel[others[1]] = index, i, j
        np.testing.assert_allclose(flat @ [i, j, 0, 1], affine @ [*voxel, 1])


def test_write_slice_datalist_writes_every_annotated_slice_as_a_2d_case(tmp_path):
    dense = write_dense_datalist(tmp_path / "dense")
    sparse = write_sparse_datalist(dense, tmp_path / "sparse", k=2)
    path = write_slice_datalist(sparse, tmp_path / "slices")
    data = json.loads(path.read_text())
    assert data["ignore_label"] == IGNORE and data["labels"] == {"0": "background", "1": "spleen", "2": "liver"}
    annotated = json.loads(sparse.read_text())["sparse"]["annotated_slices"]
    expected = sum(len(indices) for positions in annotated.values() for indices in positions.values())
    items = load_manifest(path)
    assert len(items) == expected == 2 * 3 * 2  # two cases, three axes, two slices each
    dense_items = load_manifest(dense)
    for item in items:
        source = data["slices"][item["case_id"]]
        case = int(Path(source["source"]).name.split(".")[0])
        axis, index = source["axis"], source["index"]
        image, label = nib.load(item["image"]), nib.load(item["label"])
        assert image.shape == label.shape and len(label.shape) == 2
        full_image, full_label = (nib.load(dense_items[case][key]) for key in ("image", "label"))
        np.testing.assert_array_equal(
            np.asanyarray(label.dataobj), np.take(np.asanyarray(full_label.dataobj), index, axis)
        )
        np.testing.assert_allclose(image.get_fdata(), np.take(full_image.get_fdata(), index, axis), rtol=1e-6)
        np.testing.assert_allclose(image.affine, slice_affine(full_image.affine, axis, index), atol=1e-5)
        assert IGNORE not in np.asanyarray(label.dataobj)  # a kept slice is annotated throughout


def test_write_slice_datalist_refuses_a_dense_datalist(tmp_path):
    dense = write_dense_datalist(tmp_path / "dense")
    with pytest.raises(ValueError, match=re.escape(f"{dense} must be a sparse datalist written by write_sparse")):
        write_slice_datalist(dense, tmp_path / "slices")


@pytest.mark.skipif(not SPLEEN.is_dir(), reason=f"shared MSD spleen crop not found at {SPLEEN}")
def test_msd_spleen_crop_drawn_on_three_axial_slices(tmp_path):
    """The manual label as an annotator who drew the spleen on axial slices 8 and 15 and checked slice 24 (no
    spleen) would save it: 0 elsewhere. The sparse label keeps exactly those slices of the manual label. Named,
    slice 24 labels background below the spleen; "drawn" cannot see it, and the warning names the slices that no
    labelled voxel reaches."""
    original = nib.load(SPLEEN / "sub-spleen2_ct_seg-manual.nii.gz")
    dense = np.asanyarray(original.dataobj)
    drawn = np.zeros_like(dense)
    drawn[:, :, [8, 15, 24]] = dense[:, :, [8, 15, 24]]
    assert not drawn[:, :, 24].any()
    nib.save(nib.Nifti1Image(drawn, original.affine, original.header), tmp_path / "drawn.nii.gz")
    entry = {"image": str(SPLEEN / "sub-spleen2_ct.nii.gz"), "label": str(tmp_path / "drawn.nii.gz")}
    manifest = tmp_path / "annotated.json"
    for slices, kept in (([8, 15, 24], [8, 15, 24]), ("drawn", [8, 15])):
        manifest.write_text(
            json.dumps(
                {
                    "labels": {"0": "background", "1": "spleen"},
                    "training": [{**entry, "annotated_slices": {"2": slices}}],
                }
            )
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (item,) = load_manifest(write_sparse_datalist(manifest, tmp_path / f"sparse_{len(kept)}", k=None))
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        if slices == "drawn":
            (message,) = messages
            assert "drawn.nii.gz: no labelled voxel in slices 0-7 and 16-25 along axis 2 (18 of 26)" in message
        else:
            assert messages == []
        written = nib.load(item["label"])
        np.testing.assert_allclose(written.affine, original.affine, atol=1e-6)
        np.testing.assert_array_equal(np.asanyarray(written.dataobj), sparsify_label(dense, 1, positions={2: kept}))


def test_unlabelled_ends_flags_extrapolation_beyond_the_labelled_slices():
    dense = np.zeros((20, 16, 12), dtype=np.uint8)
    dense[6:14, 5:11, 4:8] = 1
    orthogonal = sparsify_label(dense, 1)  # one slice per axis: every slice of an axis crosses the other two
    assert unlabelled_ends(orthogonal) == {}
    drawn = sparsify_label(dense, 1, positions={0: [8, 10, 12]})  # only where the structure is, along axis 0
    assert unlabelled_ends(drawn) == {0: (8, 7)}
    spaced = sparsify_label(dense, 1, positions={0: [0, 5, 10, 15, 19]})  # through the whole axis, 4 apart at most
    assert unlabelled_ends(spaced) == {}
    assert unlabelled_ends(sparsify_label(dense, 1, positions={0: [2, 5, 10, 15, 19]})) == {}  # 2 < 4 between
    assert unlabelled_ends(sparsify_label(dense, 1, positions={0: [5, 10, 15]})) == {0: (5, 4)}
    assert unlabelled_ends(dense) == {}  # a dense label is labelled everywhere


def test_copied_splits_lose_the_annotation_notes(tmp_path):
    manifest = write_annotated_datalist(tmp_path / "in", [{"2": [4, 7]}, {"2": [5, 7]}])
    data = json.loads(manifest.read_text())
    data["validation"] = [data["training"].pop()]  # keeps its annotated_slices: copied, not sparsified
    manifest.write_text(json.dumps(data))
    path = write_sparse_datalist(manifest, tmp_path / "sparse", k=None)
    (validation,) = json.loads(path.read_text())["validation"]
    assert "annotated_slices" not in validation and validation["label"].endswith("1_seg.nii.gz")
