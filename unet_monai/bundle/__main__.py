"""``python -m unet_monai.bundle OUT_DIR ...``: the same command as ``python -m unet_monai.bundle.export``."""

from __future__ import annotations

import sys

from unet_monai.bundle.export import main

sys.exit(main())
