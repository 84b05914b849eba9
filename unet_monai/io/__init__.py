"""Input and output: datalists (manifests); image readers and writers come with the I/O issue."""

from unet_monai.io.manifest import load_manifest, manifest_data_root

__all__ = ["load_manifest", "manifest_data_root"]
