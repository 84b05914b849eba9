"""The exported bundle's ``docs/README.md``, laid out as the MONAI model zoo's ``docs/readme_template.md`` (and its
spleen bundle's README): authors and tags, model overview, data, training configuration, input and output,
performance, MONAI bundle commands, system configuration, limitations, references, license. A
:class:`string.Template`; :func:`unet_monai.bundle.export.render_readme` fills it from ``metadata.json`` and the
exported configs. Kept as a Python string so that it ships in the wheel without package-data settings."""

from __future__ import annotations

from string import Template

README_TEMPLATE = Template("""\
# ${title}

### **Authors**
${authors}

### **Tags**
Segmentation, ${modality}, U-Net, valid padding, 2D, 3D

## **Model Overview**
${description}

Task: ${task}.

The network is `unet_monai.networks.PaperUNet`: the U-Net of Ronneberger et al. (2015) [1] (and its 3D form,
Cicek et al. 2016 [2]) with valid (unpadded) 3x3 convolutions, 2x2 max pooling, up-convolutions and
crop-and-concat skips, so that each output voxel sees a full context (${context} voxels per side at the default
features ${features}). Its output is smaller than its input: inputs of ${input_shape} voxels give outputs of
${output_shape} voxels, for n = 1, 2, ... (`network_data_format` in `configs/metadata.json`). Whole images are
segmented tile by tile with the paper's overlap-tile strategy (`unet_monai.inferers.OverlapTileInferer`, mirrored
borders).

## **Data**
The default data set is a deterministic synthetic EM-like image set (cells and their membranes) that
`unet_monai.data.make_synthetic_em` writes below `bundle_root` on first use, with its own training, validation
and test split (source: ${data_source}). Other data is given as a datalist (`--input`, see
`configs/inference.json`) or a data manifest.

- Image: ${image_classes} (data type: ${data_type}).
- Labels: ${label_classes}.

#### **Preprocessing**
Images are z-scored (zero mean, unit variance) and mirrored at their borders by the network's context; the
training labels get the paper's border weight map (class balance plus a term that weighs the thin membrane
between touching cells).

## **Training configuration**
`configs/train.json`: ${epochs} epochs of ${iterations_per_epoch} iterations with batch size ${batch_size}
(output patches of ${output_patch_size} voxels), learning rate ${learning_rate}, validation every
${val_interval} epochs; elastic deformation, random flips and 90-degree rotations; pixel-weighted
cross-entropy plus Dice. The other configs: ${overlays}.

### **Input**
${input_channels} channel(s): ${input_channel_def} (${input_dtype}), patches of ${input_shape} voxels.

### **Output**
${output_channels} channels: ${output_channel_def} (${output_dtype}); ${pred_classes}.

## **Performance**
${performance}

## **MONAI Bundle Commands**
Install the packages this bundle imports first, `unet_monai` from the wheel that the bundle carries:

```
pip install monai==${monai_version} ${required_packages}
pip install scripts/${wheel}
```

Run the commands from this folder (`bundle_root` is `.`), or add `--bundle_root <this folder>` to run from any
other.

#### Execute training:
```
python -m monai.bundle run training --meta_file configs/metadata.json \\
    --config_file configs/train.json --logging_file configs/logging.conf
```

#### Execute multi-GPU (or multi-process) training:
```
torchrun --standalone --nnodes=1 --nproc_per_node=2 -m monai.bundle run training --meta_file configs/metadata.json \\
    --config_file "['configs/train.json','configs/multi_gpu_train.json']" --logging_file configs/logging.conf
```

#### Execute evaluation of the trained model (`evaluate.json` scores a labelled split):
```
python -m monai.bundle run evaluating --meta_file configs/metadata.json \\
    --config_file ${evaluate_config} --logging_file configs/logging.conf
```

#### Execute inference:
```
python -m monai.bundle run inference --meta_file configs/metadata.json \\
    --config_file configs/inference.json --logging_file configs/logging.conf
```

#### Export the checkpoint to TorchScript:
```
python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt \\
    --meta_file configs/metadata.json --config_file configs/inference.json
```

#### Load the trained network in Python:
```
import monai.bundle
net = monai.bundle.load(name="${name}", bundle_dir="<folder that holds ${name}/>", workflow_type="inference")
```

## **System Configuration**
Trains and infers on a CPU (bf16 autocast where the CPU has bf16 units) or a CUDA GPU, chosen by `device` in
the configs; the default 2D training took 1.5 to 2.5 minutes on the CPUs of the repository's benchmark runs.
`configs/metadata.json` pins MONAI ${monai_version}, PyTorch ${pytorch_version} and NumPy ${numpy_version}
(versions that install on Python 3.10 and later); this bundle was exported with Python ${python_version}.
Optional packages: highdicom (DICOM SEG output) and mlflow (`--tracking mlflow`).

## **Limitations**
${intended_use}. The default weights were trained on synthetic images; train on your own data before use.

## **References**
${references}

# License
${copyright}. Licensed under the Apache License, Version 2.0 (`LICENSE`).
""")
