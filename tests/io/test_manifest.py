"""load_manifest on real files: path resolution, the checks MONAI leaves out, and the shared ISBI 2012 data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from unet_monai.io import load_manifest, manifest_data_root
from unet_monai.io.manifest import (
    check_label_values,
    manifest_class_names,
    manifest_ignore_label,
    manifest_labels,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write_manifest(path: Path, content: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def pair(case: str) -> dict:
    return {"image": f"images/{case}.nii.gz", "label": f"labels/{case}.nii.gz", "case_id": case}


@pytest.fixture
def cases(write_nifti):
    """Three image/label pairs under ``tmp_path/data/{images,labels}``."""
    for i, case in enumerate(("a", "b", "c")):
        write_nifti(f"data/images/{case}.nii.gz", seed=i)
        write_nifti(f"data/labels/{case}.nii.gz", label=True, seed=i)


def test_paths_relative_to_manifest_folder(tmp_path, cases):
    manifest = write_manifest(tmp_path / "data" / "m.json", {"training": [pair("a"), pair("b")]})
    items = load_manifest(manifest)
    assert [item["image"] for item in items] == [
        str(tmp_path / "data" / "images" / "a.nii.gz"),
        str(tmp_path / "data" / "images" / "b.nii.gz"),
    ]
    assert items[1]["label"] == str(tmp_path / "data" / "labels" / "b.nii.gz")
    assert items[1]["case_id"] == "b"
    assert manifest_data_root(manifest) == (tmp_path / "data").resolve()


@pytest.mark.parametrize("data_root", ["../data", "ABSOLUTE"], ids=["relative", "absolute"])
def test_paths_relative_to_data_root(tmp_path, cases, data_root):
    root = str(tmp_path / "data") if data_root == "ABSOLUTE" else data_root
    manifest = write_manifest(
        tmp_path / "manifests" / "m.json", {"data_root": root, "training": [pair("a")], "validation": [pair("c")]}
    )
    assert manifest_data_root(manifest) == (tmp_path / "data").resolve()
    (item,) = load_manifest(manifest, "validation")
    assert Path(item["image"]).resolve() == (tmp_path / "data" / "images" / "c.nii.gz").resolve()
    assert Path(item["label"]).is_file()


@pytest.mark.parametrize("key", ["image", "label"], ids=["image", "label"])
def test_missing_file_names_entry_and_path(tmp_path, cases, key):
    entries = [pair("a"), pair("b"), pair("c")]
    entries[1][key] = entries[1][key].replace("b.nii.gz", "missing.nii.gz")
    manifest = write_manifest(tmp_path / "data" / "m.json", {"training": entries})
    missing = tmp_path / "data" / f"{key}s" / "missing.nii.gz"
    with pytest.raises(FileNotFoundError, match=re.escape(f"training[1] {key} {missing}")):
        load_manifest(manifest)
    assert len(load_manifest(manifest, check_files=False)) == 3


def test_missing_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json does not exist"):
        load_manifest(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "entries,pattern",
    [
        ([pair("a"), pair("b"), pair("a")], r"training\[2\] image .*a\.nii\.gz is listed twice \(also entry 0\)"),
        (
            [pair("a"), {"image": "images/b.nii.gz", "label": "labels/a.nii.gz"}],
            r"training\[1\] label .*labels/a\.nii\.gz is listed twice",
        ),
    ],
    ids=["same-pair", "shared-label"],
)
def test_duplicates_raise(tmp_path, cases, entries, pattern):
    manifest = write_manifest(tmp_path / "data" / "m.json", {"training": entries})
    with pytest.raises(ValueError, match=pattern):
        load_manifest(manifest)


@pytest.mark.parametrize("split", ["training", "validation"], ids=["training", "validation"])
def test_labelled_split_entry_without_label(tmp_path, cases, split):
    manifest = write_manifest(tmp_path / "data" / "m.json", {split: [pair("a"), {"image": "images/b.nii.gz"}]})
    with pytest.raises(ValueError, match=rf"{split}\[1\] \(images/b\.nii\.gz\) has no 'label'"):
        load_manifest(manifest, split)


def test_entry_without_image(tmp_path, cases):
    manifest = write_manifest(tmp_path / "data" / "m.json", {"training": [pair("a"), {"label": "labels/b.nii.gz"}]})
    with pytest.raises(ValueError, match=r"training\[1\] must be a dict with an 'image' key"):
        load_manifest(manifest)


@pytest.mark.parametrize(
    "content", [{"training": [pair("a")], "validation": []}, {"training": [pair("a")]}], ids=["empty", "absent"]
)
def test_missing_or_empty_split_lists_the_lists(tmp_path, cases, content):
    manifest = write_manifest(tmp_path / "data" / "m.json", {"name": "x", **content})
    with pytest.raises(ValueError, match=r"non-empty list 'validation'; its lists are \['training'"):
        load_manifest(manifest, "validation")


@pytest.mark.parametrize(
    "text,pattern",
    [("{ 'training': [", "is not valid JSON"), ("[1, 2]", "must hold a JSON object, got list")],
    ids=["invalid-json", "not-an-object"],
)
def test_bad_json(tmp_path, text, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_manifest(write_manifest(tmp_path / "m.json", text))


def test_test_split_with_bare_strings(tmp_path, cases):
    manifest = write_manifest(
        tmp_path / "data" / "m.json", {"training": [pair("a")], "test": ["images/b.nii.gz", "images/c.nii.gz"]}
    )
    items = load_manifest(manifest, "test")
    assert items == [
        {"image": str(tmp_path / "data" / "images" / "b.nii.gz")},
        {"image": str(tmp_path / "data" / "images" / "c.nii.gz")},
    ]


def test_test_split_checks_files(tmp_path, cases):
    manifest = write_manifest(tmp_path / "data" / "m.json", {"test": ["images/a.nii.gz", "images/zzz.nii.gz"]})
    with pytest.raises(FileNotFoundError, match=r"test\[1\] image .*zzz\.nii\.gz does not exist"):
        load_manifest(manifest, "test")


def test_isbi2012_shared_data(tmp_path):
    isbi = SHARED_DATA / "isbi2012"
    if not (isbi / "train" / "image").is_dir():
        pytest.skip(f"shared ISBI 2012 data not found at {isbi} (expected ../shared/data beside the repository)")
    training = [
        {"image": f"train/image/{n}.png", "label": f"train/label/{n}.png", "case_id": str(n)} for n in range(25)
    ]
    manifest = write_manifest(
        tmp_path / "isbi2012.json", {"name": "isbi2012", "data_root": str(isbi), "training": training}
    )
    items = load_manifest(manifest)
    assert len(items) == 25
    for n, item in enumerate(items):
        assert Path(item["image"]) == (isbi / "train" / "image" / f"{n}.png").resolve()
        assert Path(item["label"]) == (isbi / "train" / "label" / f"{n}.png").resolve()
        assert Path(item["image"]).is_file() and Path(item["label"]).is_file()


# ------------------------------------------------------------------------------------------- labels and ignore value
LABELS = {"0": "background", "1": "spleen", "2": "liver"}


@pytest.mark.parametrize(
    "extra,expected",
    [
        ({}, None),
        ({"ignore_label": 255}, 255),
        ({"labels": {**LABELS, "255": "ignore"}}, 255),
        ({"labels": {**LABELS, "255": "ignore"}, "ignore_label": 255}, 255),
        ({"ignore_label": -1}, -1),
        ({"ignore_label": None}, None),
    ],
    ids=["none", "top-level-key", "labels-entry", "both-agree", "negative", "null"],
)
def test_manifest_ignore_label(tmp_path, cases, extra, expected):
    manifest = write_manifest(tmp_path / "data" / "m.json", {"labels": LABELS, "training": [pair("a")], **extra})
    assert manifest_ignore_label(manifest) == expected
    assert len(load_manifest(manifest)) == 1


@pytest.mark.parametrize(
    "extra,match",
    [
        (
            {"labels": {**LABELS, "254": "ignore"}, "ignore_label": 255},
            r"'ignore_label' must agree with the 'labels' entry named 'ignore' .* got ignore_label 255 and "
            r'labels \{"254": "ignore"\}',
        ),
        ({"ignore_label": 2}, r"'ignore_label' must not be the value of a named class, got 2, which 'labels' names"),
        (
            {"labels": {**LABELS, "254": "ignore", "255": "Ignore"}},
            r"'labels' must name at most one value 'ignore', got values \[254, 255\]",
        ),
        ({"ignore_label": "255"}, r"'ignore_label' must be an integer label value, got '255'"),
        ({"ignore_label": True}, r"'ignore_label' must be an integer label value, got True"),
        (
            {"labels": {"background": 0, "spleen": 1, "ignore": 255}},
            r"'labels' keys must be integer label values, .*nnU-Net's name -> value form; write value -> name: "
            r'\{"0": "background"',
        ),
    ],
    ids=["disagree", "ignore-is-a-class", "two-ignore-entries", "string", "bool", "nnunet-form"],
)
def test_mixed_ignore_conventions_refused_with_the_file_named(tmp_path, cases, extra, match):
    manifest = write_manifest(tmp_path / "data" / "m.json", {"labels": LABELS, "training": [pair("a")], **extra})
    pattern = re.escape(f"manifest {manifest}: ") + match
    with pytest.raises(ValueError, match=pattern):
        manifest_ignore_label(manifest)
    with pytest.raises(ValueError, match=pattern):
        load_manifest(manifest)


@pytest.mark.parametrize(
    "extra,expected",
    [
        ({}, {1: "spleen", 2: "liver"}),
        ({"labels": {**LABELS, "255": "ignore"}}, {1: "spleen", 2: "liver"}),
        ({"labels": {"0": "membrane", "255": "cell"}}, {0: "membrane", 255: "cell"}),  # isbi2012: no background
        ({"labels": {"0": "cell", "1": "membrane"}, "ignore_label": 2}, {0: "cell", 1: "membrane"}),
    ],
    ids=["decathlon", "ignore-entry", "no-background", "synthetic-em"],
)
def test_manifest_class_names_leave_out_background_and_ignore(tmp_path, extra, expected):
    manifest = write_manifest(tmp_path / "m.json", {"labels": LABELS, **extra})
    assert manifest_class_names(manifest) == expected


def test_manifest_labels_keep_every_entry(tmp_path):
    manifest = write_manifest(tmp_path / "m.json", {"labels": {**LABELS, "255": "ignore"}})
    assert manifest_labels(manifest) == {0: "background", 1: "spleen", 2: "liver", 255: "ignore"}


@pytest.mark.parametrize(
    "values,ignore",
    [([0, 1, 2], None), (np.array([0.0, 2.0, 255.0]), 255), ([1], None), (np.array([], dtype=np.uint8), None)],
    ids=["all-classes", "float-with-ignore", "subset", "empty"],
)
def test_check_label_values_accepts_named_values(values, ignore):
    check_label_values(values, {0: "background", 1: "spleen", 2: "liver"}, "seg.nii.gz", ignore_label=ignore)


def test_check_label_values_takes_a_whole_label_map():
    label = torch.zeros(1, 4, 4, 3, dtype=torch.uint8)
    label[0, 1, 1, 1] = 255
    check_label_values(label, {0: "background", 1: "spleen"}, "seg.nii.gz", ignore_label=255)
    label[0, 2, 2, 2] = 7
    with pytest.raises(ValueError, match=re.escape("label seg.nii.gz must hold only the label values the datalist")):
        check_label_values(label, {0: "background", 1: "spleen"}, "seg.nii.gz", ignore_label=255)


@pytest.mark.parametrize(
    "values,ignore,message",
    [
        ([0, 1, 3, 255], None, "names ([0, 1, 2]), got [3, 255] as well."),
        (np.array([0, 3, 255], dtype=np.uint8), 255, "names ([0, 1, 2, 255]), got [3] as well."),
        (np.array([0.0, 0.5, 1.0]), None, "names ([0, 1, 2]), got [0.5] as well."),
    ],
    ids=["unknown-and-ignore-not-declared", "unknown-uint8", "non-integer"],
)
def test_check_label_values_names_the_file_and_the_unknown_values(values, ignore, message):
    start = "label /data/seg.nii.gz must hold only the label values the datalist "
    with pytest.raises(ValueError, match=re.escape(start + message)):
        check_label_values(values, {0: "background", 1: "spleen", 2: "liver"}, "/data/seg.nii.gz", ignore_label=ignore)


@pytest.mark.parametrize(
    "name", ["msd_spleen_ct_crop", "totalsegmentator_examples", "sct_spinalcord_mr", "isbi2012", "dcmqi_ct_seg"]
)
def test_shared_datalists_have_no_ignore_value_and_name_their_classes(name):
    manifest = Path(__file__).resolve().parents[2] / "data_manifests" / f"{name}.json"
    assert manifest_ignore_label(manifest) is None
    classes = manifest_class_names(manifest)
    assert classes and "background" not in classes.values()
    assert set(classes) <= set(manifest_labels(manifest))
