"""The paper-style U-Net (Ronneberger et al. 2015) and its 3D form (Cicek et al. 2016) as a MONAI network, with
per-level (anisotropic) pooling and kernel sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from unet_monai.networks import slabs as _slabs
from unet_monai.networks.blocks import DoubleConv, Down, Up
from unet_monai.networks.onednn import Conv3d

__all__ = ["PaperUNet"]

_PADDINGS = ("valid", "same")
_UPSAMPLES = ("deconv", "nearest", "linear")
_FINAL_ACTS = (None, "sigmoid", "softmax")


class Encoder(nn.Module):
    """The contracting path: a DoubleConv, then ``len(features) - 1`` Down steps. Returns every level.

    ``pool_sizes`` has one entry per Down step, ``kernel_sizes`` and ``mid_features`` one per level (see
    :class:`PaperUNet`).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features: Sequence[int],
        padding: str,
        norm: str | tuple | None,
        pool_sizes: Sequence[Sequence[int]],
        kernel_sizes: Sequence[Sequence[int]],
        mid_features: Sequence[int],
    ) -> None:
        super().__init__()
        self.stem = DoubleConv(
            spatial_dims, in_channels, features[0], padding, norm, _size(kernel_sizes[0]), mid_features[0]
        )
        self.downs = nn.ModuleList(
            [
                Down(
                    spatial_dims,
                    features[i],
                    features[i + 1],
                    padding,
                    norm,
                    _size(pool_sizes[i]),
                    _size(kernel_sizes[i + 1]),
                    mid_features[i + 1],
                )
                for i in range(len(features) - 1)
            ]
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
    """The expanding path: one Up step per pooling, from the bottleneck back to the finest level.

    The Up step of level ``i`` upsamples by ``pool_sizes[i]`` to ``up_features[i]`` channels and convolves with
    ``kernel_sizes[i]`` (see :class:`PaperUNet`).
    """

    def __init__(
        self,
        spatial_dims: int,
        features: Sequence[int],
        padding: str,
        norm: str | tuple | None,
        upsample: str,
        norm_act_after_upsample: bool,
        pool_sizes: Sequence[Sequence[int]],
        kernel_sizes: Sequence[Sequence[int]],
        up_features: Sequence[int],
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
                    _size(pool_sizes[i]),
                    _size(kernel_sizes[i]),
                    up_features[i],
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


def _size(per_axis: Sequence[int]) -> int | tuple[int, ...]:
    """A per-axis size as one int when it is the same along every axis (the layers then build exactly as before
    per-axis sizes existed), else as a tuple."""
    return per_axis[0] if len(set(per_axis)) == 1 else tuple(per_axis)


def _per_axis_entries(name: str, value: Sequence[Any], count: int, spatial_dims: int) -> tuple[tuple[int, ...], ...]:
    """``count`` entries, each an int or a list of ``spatial_dims`` ints, as tuples of ``spatial_dims`` ints >= 1."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != count:
        raise ValueError(
            f"{name} must list {count} entries (each an int or {spatial_dims} ints, one per spatial axis), "
            f"got {value!r}."
        )
    entries = []
    for entry in value:
        sizes = [entry] * spatial_dims if isinstance(entry, int) else entry
        if (
            isinstance(sizes, (str, bytes))
            or not isinstance(sizes, Sequence)
            or len(sizes) != spatial_dims
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes)
        ):
            raise ValueError(
                f"{name} entries must each be an int >= 1 or {spatial_dims} ints >= 1 (one per spatial axis), "
                f"got {entry!r} in {value!r}."
            )
        entries.append(tuple(int(s) for s in sizes))
    return tuple(entries)


def _channel_list(name: str, value: Sequence[int], count: int, what: str) -> tuple[int, ...]:
    """``count`` positive channel counts as a tuple."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != count:
        raise ValueError(f"{name} must list {count} positive channel counts ({what}), got {value!r}.")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in value):
        raise ValueError(f"{name} must list {count} positive channel counts ({what}), got {value!r}.")
    return tuple(int(c) for c in value)


class PaperUNet(nn.Module):
    """The U-Net of Ronneberger et al. (2015), in 2D or 3D, with valid or same convolutions.

    Contracting path: per level two 3x3 convolutions with ReLU, then 2x2 max-pooling with stride 2.
    Expanding path: a 2x2 up-convolution that halves the channels, concatenation with the centre-cropped
    feature map of the same level, two 3x3 convolutions with ReLU. A final 1x1 convolution maps to
    ``out_channels``. Weights are initialised from a Gaussian with std ``sqrt(2 / fan_in)`` (He et al.),
    as in the paper; biases start at zero.

    Deviations from the paper, all opt-in: ``padding="same"``; ``norm`` (BatchNorm as in Cicek et al.
    2016, or any MONAI ``Norm``); interpolation ``upsample`` instead of the up-convolution;
    ``norm_act_after_upsample``, ``final_kernel_size`` and ``final_act`` (for the blog network); anisotropic
    ``pool_sizes`` and ``kernel_sizes`` per level (as nnU-Net plans them for, say, 0.8 x 0.8 x 5 mm voxels);
    ``mid_features`` and ``up_features`` (Cicek et al.'s 3D channel plan, :func:`cicek_unet_3d`).

    All sizes are in voxels. Spatial axes are those of the input ``(B, C, H, W[, D])``: axis 0 is ``H``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the input image.
        out_channels: channels of the output (classes for softmax, 1 for a sigmoid).
        features: channels per level, finest first; ``len(features) - 1`` poolings. The paper's
            ``(64, 128, 256, 512, 1024)`` by default.
        padding: ``"valid"`` (the paper: the output is smaller than the input, see :meth:`output_shape`)
            or ``"same"`` (the output has the input's shape; each size must be divisible by the product of that
            axis' pool sizes, :attr:`pool_grid`).
        norm: None (the paper) or a MONAI ``Norm`` name such as ``"batch"`` or ``"instance"``.
        dropout: dropout probability at the end of the contracting path (the paper uses drop-out there).
        upsample: ``"deconv"`` (the paper's up-convolution, kernel size and stride the level's pool size),
            ``"nearest"`` or ``"linear"``.
        norm_act_after_upsample: also apply norm and ReLU after each up-convolution.
        final_kernel_size: kernel size of the last convolution, 1 (the paper) or 3.
        final_act: None (logits, the paper), ``"sigmoid"`` or ``"softmax"``.
        pool_sizes: one entry per pooling, finest first (``len(features) - 1``), each an int or one int per
            spatial axis: max-pooling size and stride, and the up-convolution's size and stride on the way back
            up; 1 along an axis means no pooling along it. None: 2 everywhere (the paper). Example for thick
            slices along the last axis: ``[[2, 2, 1], [2, 2, 1], [2, 2, 2]]``.
        kernel_sizes: one entry per level, bottleneck included (``len(features)``), each an odd int or one
            odd int per spatial axis: the kernel of both convolutions of that level, in the contracting and
            the expanding path; 1 along an axis means no context along it. None: 3 everywhere (the paper).
            Example: ``[[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3]]``.
        mid_features: channels of the first convolution of each contracting-path level, bottleneck included
            (``len(features)``). None: the level's ``features`` (the paper). Cicek et al. use half:
            ``(32, 64, 128, 256)`` for features ``(64, 128, 256, 512)``.
        up_features: channels out of each up-convolution, finest first (``len(features) - 1``). None: the
            finer level's ``features`` (the paper halves the channels). Cicek et al. keep them:
            ``features[1:]``.

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

        ct = PaperUNet(3, 1, 2, features=(8, 16, 32, 64), pool_sizes=[[2, 2, 1], [2, 2, 1], [2, 2, 2]],
                       kernel_sizes=[[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3]])
        ct.context  # (44, 44, 8): voxels lost per side, per axis
    """

    # Shape arithmetic is Python-side only; TorchScript compiles just the forward path.
    __jit_unused_properties__ = [
        "depth",
        "context",
        "context_per_axis",
        "pool_grid",
        "min_input_shape",
        "isotropic",
    ]

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
        pool_sizes: Sequence[int | Sequence[int]] | None = None,
        kernel_sizes: Sequence[int | Sequence[int]] | None = None,
        mid_features: Sequence[int] | None = None,
        up_features: Sequence[int] | None = None,
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
        self.features = tuple(int(f) for f in features)
        levels = len(self.features)
        self.pool_sizes = _per_axis_entries(
            "pool_sizes", [2] * (levels - 1) if pool_sizes is None else pool_sizes, levels - 1, spatial_dims
        )
        self.kernel_sizes = _per_axis_entries(
            "kernel_sizes", [3] * levels if kernel_sizes is None else kernel_sizes, levels, spatial_dims
        )
        if any(k % 2 == 0 for entry in self.kernel_sizes for k in entry):
            raise ValueError(f"kernel_sizes must be odd (a centred kernel), got {kernel_sizes!r}.")
        self.mid_features = _channel_list(
            "mid_features", self.features if mid_features is None else mid_features, levels, "one per level"
        )
        self.up_features = _channel_list(
            "up_features", self.features[:-1] if up_features is None else up_features, levels - 1, "one per pooling"
        )

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.padding = padding
        self.final_kernel_size = final_kernel_size
        self.inference_slabs = 8

        self.encoder = Encoder(
            spatial_dims,
            in_channels,
            self.features,
            padding,
            norm,
            self.pool_sizes,
            self.kernel_sizes,
            self.mid_features,
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.decoder = Decoder(
            spatial_dims,
            self.features,
            padding,
            norm,
            upsample,
            norm_act_after_upsample,
            self.pool_sizes,
            self.kernel_sizes,
            self.up_features,
        )
        conv = nn.Conv2d if spatial_dims == 2 else Conv3d
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
    def isotropic(self) -> bool:
        """Whether every pool size and kernel size is the same along all axes (then :attr:`context` is an int)."""
        return all(len(set(entry)) == 1 for entry in self.pool_sizes + self.kernel_sizes)

    @property
    def pool_grid(self) -> tuple[int, ...]:
        """Product of the pool sizes along each axis: valid input sizes along an axis are this far apart, and a
        tile whose corner lies on a multiple of it sees the whole image's pooling grid (``2 ** depth`` per axis
        for the paper's net)."""
        return tuple(math.prod(entry[axis] for entry in self.pool_sizes) for axis in range(self.spatial_dims))

    def _trims(self, axis: int) -> list[int]:
        """Voxels one DoubleConv of each level removes along ``axis`` (both sides together), finest first."""
        if self.padding == "same":
            return [0] * len(self.features)
        return [2 * (entry[axis] - 1) for entry in self.kernel_sizes]

    def _output_size_1d(self, size: int, axis: int) -> int | None:
        """Output size along ``axis``, or None when ``size`` does not fit the network."""
        trims = self._trims(axis)
        pools = [entry[axis] for entry in self.pool_sizes]
        for level in range(self.depth):
            size -= trims[level]
            if size < pools[level] or size % pools[level]:
                return None
            size //= pools[level]
        size -= trims[-1]
        if size < 1:
            return None
        for level in reversed(range(self.depth)):
            size = pools[level] * size - trims[level]
            if size < 1:
                return None
        if self.padding == "valid":
            size -= self.final_kernel_size - 1
        return size if size >= 1 else None

    def _input_size_from_bottleneck(self, bottleneck: int, axis: int) -> int:
        trims = self._trims(axis)
        size = bottleneck + trims[-1]
        for level in reversed(range(self.depth)):
            size = self.pool_sizes[level][axis] * size + trims[level]
        return size

    def _smallest_valid_input_size(self, axis: int) -> int:
        bottleneck = 1
        while self._output_size_1d(self._input_size_from_bottleneck(bottleneck, axis), axis) is None:
            bottleneck += 1
        return self._input_size_from_bottleneck(bottleneck, axis)

    @property
    def min_input_shape(self) -> tuple[int, ...]:
        """The smallest valid spatial input shape, one size per axis in voxels (see :meth:`check_fits`)."""
        return tuple(self._smallest_valid_input_size(axis) for axis in range(self.spatial_dims))

    def _check_axis(self, axis: int) -> None:
        if not 0 <= axis < self.spatial_dims:
            raise ValueError(f"axis must be in [0, {self.spatial_dims}), got {axis}.")

    def nearest_valid_input_sizes(self, size: int, axis: int = 0) -> tuple[int, ...]:
        """The valid input sizes nearest to ``size`` along ``axis``: ``size`` itself if valid, else the largest
        valid size below (if any) and the smallest above, in voxels."""
        self._check_axis(axis)
        if self._output_size_1d(size, axis) is not None:
            return (size,)
        step = self.pool_grid[axis]
        smallest = self._smallest_valid_input_size(axis)
        if size < smallest:
            return (smallest,)
        below = smallest + (size - smallest) // step * step
        return (below, below + step)

    def _valid_sizes_rule(self, axis: int) -> str:
        step, smallest = self.pool_grid[axis], self._smallest_valid_input_size(axis)
        if self.padding == "valid":
            offset = smallest % step
            return f"{step}*n + {offset}" if step > 1 else "any size"
        return f"a multiple of {step}" if step > 1 else "any size"

    def _check_shape_length(self, name: str, shape: tuple[int, ...]) -> None:
        if len(shape) != self.spatial_dims:
            raise ValueError(f"{name} must have {self.spatial_dims} sizes (one per spatial axis), got {shape}.")

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial output shape for a spatial input shape ``(H, W[, D])``, per axis in voxels.

        Raises:
            ValueError: if the input shape does not fit: along some axis a size does not divide by a pool size
                or is too small. The message names, per axis, the size and the nearest valid sizes.
        """
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) != self.spatial_dims:
            raise ValueError(f"input spatial shape must have {self.spatial_dims} dimensions, got {input_shape}.")
        out = []
        problems = []
        for axis, size in enumerate(input_shape):
            size_out = self._output_size_1d(size, axis)
            if size_out is None:
                near = " and ".join(str(s) for s in self.nearest_valid_input_sizes(size, axis))
                problems.append(
                    f"input size {size} along axis {axis} is not valid: nearest valid sizes {near} (valid sizes "
                    f"along axis {axis} are {self._valid_sizes_rule(axis)}, at least "
                    f"{self._smallest_valid_input_size(axis)})"
                )
            else:
                out.append(size_out)
        if problems:
            raise ValueError(
                f"input spatial shape {input_shape} does not fit this {self.padding}-padding U-Net with pool sizes "
                f"{[list(p) for p in self.pool_sizes]}: " + "; ".join(problems) + "."
            )
        return tuple(out)

    def input_shape_for(self, output_shape: Sequence[int]) -> tuple[int, ...]:
        """The smallest valid spatial input shape whose output covers ``output_shape`` ``(H, W[, D])``, per axis in
        voxels."""
        wanted = tuple(int(s) for s in output_shape)
        self._check_shape_length("output_shape", wanted)
        if any(s < 1 for s in wanted):
            raise ValueError(f"output_shape sizes must be >= 1, got {wanted}.")
        shape = []
        for axis, size in enumerate(wanted):
            candidate = self._smallest_valid_input_size(axis)
            while self._output_size_1d(candidate, axis) < size:  # type: ignore[operator]
                candidate += self.pool_grid[axis]
            shape.append(candidate)
        return tuple(shape)

    @property
    def context_per_axis(self) -> tuple[int, ...]:
        """Voxels lost per side along each axis: input and output differ by ``2 * context_per_axis[a]`` along
        axis ``a`` (all 0 for same padding)."""
        if self.padding == "same":
            return (0,) * self.spatial_dims
        context = []
        for axis in range(self.spatial_dims):
            smallest = self._smallest_valid_input_size(axis)
            context.append((smallest - self._output_size_1d(smallest, axis)) // 2)  # type: ignore[operator]
        return tuple(context)

    @property
    def context(self) -> int | tuple[int, ...]:
        """Voxels lost per side of each axis: 92 for the 2D paper net, 0 for same padding.

        An int for an :attr:`isotropic` configuration (every axis loses the same), else a tuple per axis as
        :attr:`context_per_axis`. With valid padding, input and output differ by ``2 * context`` along every axis.
        """
        per_axis = self.context_per_axis
        return per_axis[0] if self.isotropic else per_axis

    def check_fits(self, volume_shape: Sequence[int]) -> None:
        """Check that a volume of spatial shape ``(H, W[, D])`` is at least the smallest valid input along every
        axis (:attr:`min_input_shape`, in voxels), so that tiles of valid sizes can be cut from it.

        Raises:
            ValueError: naming the axis, the volume's size along it and the minimum, for the first axis that is
                too small (a caller can then refuse the volume or mirror-pad it to the minimum).
        """
        shape = tuple(int(s) for s in volume_shape)
        self._check_shape_length("volume_shape", shape)
        for axis, (size, minimum) in enumerate(zip(shape, self.min_input_shape)):
            if size < minimum:
                raise ValueError(
                    f"volume_shape must be at least {minimum} voxels along axis {axis} (the smallest valid input "
                    f"of this network along that axis), got {size} (volume shape {shape}); pad the volume (for "
                    f"example by mirroring) to at least {minimum} or use a network with fewer poolings along "
                    f"axis {axis}."
                )

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

        With valid padding the output is the centre of the input, ``context_per_axis`` voxels smaller per side;
        with same padding each spatial size must be divisible by that axis' :attr:`pool_grid`.
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
        if x.shape[2] < 8 + 2 * self.context_per_axis[0]:
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
