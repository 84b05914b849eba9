"""The paper-style U-Net (Ronneberger et al. 2015) and its 3D form (Cicek et al. 2016) as a MONAI network."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from unet_monai.networks import slabs as _slabs
from unet_monai.networks.blocks import DoubleConv, Down, Up

__all__ = ["PaperUNet"]

_PADDINGS = ("valid", "same")
_UPSAMPLES = ("deconv", "nearest", "linear")
_FINAL_ACTS = (None, "sigmoid", "softmax")


class Encoder(nn.Module):
    """The contracting path: a DoubleConv, then ``len(features) - 1`` Down steps. Returns every level."""

    def __init__(
        self, spatial_dims: int, in_channels: int, features: Sequence[int], padding: str, norm: str | tuple | None
    ) -> None:
        super().__init__()
        self.stem = DoubleConv(spatial_dims, in_channels, features[0], padding, norm)
        self.downs = nn.ModuleList(
            [Down(spatial_dims, features[i], features[i + 1], padding, norm) for i in range(len(features) - 1)]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, in_channels, *S)`` -> one feature map per level, finest first."""
        return self.levels_from(self.stem(x))

    def levels_from(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem's output ``(B, features[0], *S)`` -> one feature map per level, finest first."""
        levels = [x]
        for down in self.downs:
            x = down(x)
            levels.append(x)
        return levels


class Decoder(nn.Module):
    """The expanding path: one Up step per pooling, from the bottleneck back to the finest level."""

    def __init__(
        self,
        spatial_dims: int,
        features: Sequence[int],
        padding: str,
        norm: str | tuple | None,
        upsample: str,
        norm_act_after_upsample: bool,
    ) -> None:
        super().__init__()
        self.ups = nn.ModuleList(
            [
                Up(
                    spatial_dims,
                    features[i + 1],
                    features[i],
                    features[i],
                    padding,
                    norm,
                    upsample,
                    norm_act_after_upsample,
                )
                for i in reversed(range(len(features) - 1))
            ]
        )

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """Feature maps of the encoder, finest first -> ``(B, features[0], *S_out)``. Consumes ``levels``."""
        x = levels.pop()
        for up in self.ups:
            # Up pops its skip from the list and releases it once used
            x = up.forward_from_levels(x, levels)  # type: ignore[operator]
        return x


class PaperUNet(nn.Module):
    """The U-Net of Ronneberger et al. (2015), in 2D or 3D, with valid or same 3x3 convolutions.

    Contracting path: per level two 3x3 convolutions with ReLU, then 2x2 max-pooling with stride 2.
    Expanding path: a 2x2 up-convolution that halves the channels, concatenation with the centre-cropped
    feature map of the same level, two 3x3 convolutions with ReLU. A final 1x1 convolution maps to
    ``out_channels``. Weights are initialised from a Gaussian with std ``sqrt(2 / fan_in)`` (He et al.),
    as in the paper; biases start at zero.

    Deviations from the paper, all opt-in: ``padding="same"``; ``norm`` (BatchNorm as in Cicek et al.
    2016, or any MONAI ``Norm``); interpolation ``upsample`` instead of the up-convolution;
    ``norm_act_after_upsample``, ``final_kernel_size`` and ``final_act`` (for the blog network).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the input image.
        out_channels: channels of the output (classes for softmax, 1 for a sigmoid).
        features: channels per level, finest first; ``len(features) - 1`` poolings. The paper's
            ``(64, 128, 256, 512, 1024)`` by default.
        padding: ``"valid"`` (the paper: the output is smaller than the input, see :meth:`output_shape`)
            or ``"same"`` (the output has the input's shape; each size must be divisible by
            ``2 ** (len(features) - 1)``).
        norm: None (the paper) or a MONAI ``Norm`` name such as ``"batch"`` or ``"instance"``.
        dropout: dropout probability at the end of the contracting path (the paper uses drop-out there).
        upsample: ``"deconv"`` (the paper's 2x2 up-convolution), ``"nearest"`` or ``"linear"``.
        norm_act_after_upsample: also apply norm and ReLU after each up-convolution.
        final_kernel_size: kernel size of the last convolution, 1 (the paper) or 3.
        final_act: None (logits, the paper), ``"sigmoid"`` or ``"softmax"``.

    Attributes:
        inference_slabs: in eval mode without autograd, the first level and the last decoder step (the
            full-resolution maps) are computed in up to this many slabs along the first spatial axis, with the
            halo each convolution needs: the same output, about half the peak memory of a 3D tile, no slower
            (BENCHMARKS.md). 8 by default; 0 or 1 computes whole maps. Networks with instance, group or layer
            norm, linear upsampling or a 3x3 head always compute whole maps (see
            :mod:`unet_monai.networks.slabs`).

    Example::

        net = PaperUNet(spatial_dims=2, in_channels=1, out_channels=2)
        net.output_shape((572, 572))  # (388, 388)
        net(torch.zeros(1, 1, 572, 572)).shape  # torch.Size([1, 2, 388, 388])
    """

    # Shape arithmetic is Python-side only; TorchScript compiles just the forward path.
    __jit_unused_properties__ = ["depth", "context", "_trim"]

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        padding: str = "valid",
        norm: str | tuple | None = None,
        dropout: float = 0.0,
        upsample: str = "deconv",
        norm_act_after_upsample: bool = False,
        final_kernel_size: int = 1,
        final_act: str | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}.")
        if len(features) < 2 or any(int(f) < 1 for f in features):
            raise ValueError(f"features must list at least two positive channel counts, got {features}.")
        if padding not in _PADDINGS:
            raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}.")
        if upsample not in _UPSAMPLES:
            raise ValueError(f"upsample must be one of {_UPSAMPLES}, got {upsample!r}.")
        if final_kernel_size not in (1, 3):
            raise ValueError(f"final_kernel_size must be 1 or 3, got {final_kernel_size}.")
        if final_act not in _FINAL_ACTS:
            raise ValueError(f"final_act must be one of {_FINAL_ACTS}, got {final_act!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be >= 0 and < 1, got {dropout}.")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = tuple(int(f) for f in features)
        self.padding = padding
        self.final_kernel_size = final_kernel_size
        self.inference_slabs = 8

        self.encoder = Encoder(spatial_dims, in_channels, self.features, padding, norm)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.decoder = Decoder(spatial_dims, self.features, padding, norm, upsample, norm_act_after_upsample)
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        final_pad = final_kernel_size // 2 if padding == "same" else 0
        self.head = conv(self.features[0], out_channels, final_kernel_size, padding=final_pad)
        self.final_act: nn.Module = nn.Identity()
        if final_act == "sigmoid":
            self.final_act = nn.Sigmoid()
        elif final_act == "softmax":
            self.final_act = nn.Softmax(dim=1)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    # ---------------------------------------------------------------- shape arithmetic (all sizes in voxels)
    @property
    def depth(self) -> int:
        """Number of poolings."""
        return len(self.features) - 1

    @property
    def _trim(self) -> int:
        """Voxels one DoubleConv removes along an axis (both sides together)."""
        return 4 if self.padding == "valid" else 0

    def _output_size_1d(self, size: int) -> int | None:
        """Output size along one axis, or None when ``size`` does not fit the network."""
        trim = self._trim
        for _ in range(self.depth):
            size -= trim
            if size < 2 or size % 2:
                return None
            size //= 2
        size -= trim
        if size < 1:
            return None
        for _ in range(self.depth):
            size = 2 * size - trim
            if size < 1:
                return None
        if self.padding == "valid":
            size -= self.final_kernel_size - 1
        return size if size >= 1 else None

    def _input_size_from_bottleneck(self, bottleneck: int) -> int:
        size = bottleneck + self._trim
        for _ in range(self.depth):
            size = 2 * size + self._trim
        return size

    def _smallest_valid_input_size(self) -> int:
        bottleneck = 1
        while self._output_size_1d(self._input_size_from_bottleneck(bottleneck)) is None:
            bottleneck += 1
        return self._input_size_from_bottleneck(bottleneck)

    def nearest_valid_input_sizes(self, size: int) -> tuple[int, ...]:
        """The valid input sizes nearest to ``size`` along one axis: ``size`` itself if valid, else the
        largest valid size below (if any) and the smallest above, in voxels."""
        if self._output_size_1d(size) is not None:
            return (size,)
        step = 2**self.depth
        smallest = self._smallest_valid_input_size()
        if size < smallest:
            return (smallest,)
        below = smallest + (size - smallest) // step * step
        return (below, below + step)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial output shape for a spatial input shape ``(H, W[, D])``, in voxels.

        Raises:
            ValueError: if the input shape does not fit: a size is odd before a pooling or too small. The
                message names the nearest valid sizes.
        """
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) != self.spatial_dims:
            raise ValueError(f"input spatial shape must have {self.spatial_dims} dimensions, got {input_shape}.")
        out = []
        problems = []
        for axis, size in enumerate(input_shape):
            size_out = self._output_size_1d(size)
            if size_out is None:
                near = " or ".join(str(s) for s in self.nearest_valid_input_sizes(size))
                problems.append(f"axis {axis}: {size} (nearest valid sizes: {near})")
            else:
                out.append(size_out)
        if problems:
            rule = (
                f"{2**self.depth}*n + {self._input_size_from_bottleneck(0)}"
                if self.padding == "valid"
                else f"a multiple of {2**self.depth}"
            )
            raise ValueError(
                f"input spatial shape {input_shape} does not fit this {self.padding}-padding U-Net with "
                f"{self.depth} poolings; each size must be {rule}, at least {self._smallest_valid_input_size()}. "
                f"Got " + "; ".join(problems) + "."
            )
        return tuple(out)

    def input_shape_for(self, output_shape: Sequence[int]) -> tuple[int, ...]:
        """The smallest valid spatial input shape whose output covers ``output_shape`` (voxels per axis)."""
        shape = []
        for size in output_shape:
            if int(size) < 1:
                raise ValueError(f"output_shape sizes must be >= 1, got {tuple(output_shape)}.")
            candidate = self._smallest_valid_input_size()
            while self._output_size_1d(candidate) < int(size):  # type: ignore[operator]
                candidate += 2**self.depth
            shape.append(candidate)
        return tuple(shape)

    @property
    def context(self) -> int:
        """Voxels lost per side of each axis: 92 for the 2D paper net, 0 for same padding.

        With valid padding, input and output differ by ``2 * context`` along every axis.
        """
        if self.padding == "same":
            return 0
        smallest = self._smallest_valid_input_size()
        return (smallest - self._output_size_1d(smallest)) // 2  # type: ignore[operator]

    # ---------------------------------------------------------------- forward
    @torch.jit.unused
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.spatial_dims + 2:
            axes = "H, W, D" if self.spatial_dims == 3 else "H, W"
            raise ValueError(
                f"input must be a {self.spatial_dims + 2}D tensor (B, C, {axes}), got shape {tuple(x.shape)}."
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(f"input must have {self.in_channels} channels, got shape {tuple(x.shape)}.")
        self.output_shape(x.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W[, D])`` -> ``(B, out_channels, *output_shape((H, W[, D])))``.

        With valid padding the output is the centre of the input, ``context`` voxels smaller per side;
        with same padding each spatial size must be divisible by ``2 ** depth``.
        """
        if not torch.jit.is_scripting():
            self._check_input(x)
            if self._slabs_apply(x):
                return self._forward_in_slabs(x)
        levels = self.encoder(x)
        levels[-1] = self.dropout(levels[-1])
        return self.final_act(self.head(self.decoder(levels)))

    @torch.jit.unused
    def _slabs_apply(self, x: torch.Tensor) -> bool:
        """Whether this pass may compute its full-resolution levels in slabs: inference (eval, no autograd),
        row-local blocks (see :mod:`unet_monai.networks.slabs`), a 1x1 head, enough rows for two slabs."""
        if self.inference_slabs < 2 or torch.is_grad_enabled() or self.training:
            return False
        if x.shape[2] < 8 + 2 * self.context:
            return False
        blocks = (self.encoder.stem, self.decoder.ups[-1], self.head)
        return all(_slabs.row_local(block) for block in blocks)

    @torch.jit.unused
    def _forward_in_slabs(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with the first level and the last decoder step computed ``inference_slabs`` slabs of rows
        at a time: the same values, about half the peak memory of a 3D tile (the skip of the first level and the
        coarser levels stay whole)."""
        stem = _slabs.double_conv_in_slabs(self.encoder.stem, x, self.inference_slabs)  # type: ignore[arg-type]
        levels = self.encoder.levels_from(stem)
        del stem  # levels holds it: the last step releases it once used
        levels[-1] = self.dropout(levels[-1])
        bottom = levels.pop()
        for up in list(self.decoder.ups)[:-1]:
            bottom = up.forward_from_levels(bottom, levels)  # type: ignore[operator]
        last = self.decoder.ups[-1]
        return _slabs.last_up_in_slabs(
            last,  # type: ignore[arg-type]
            lambda y: self.final_act(self.head(y)),
            bottom,
            levels.pop(),
            self.inference_slabs,
        )
