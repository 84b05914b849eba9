"""A dataset whose loading errors become marker items, for skip-and-report batch runs
(:mod:`unet_monai.handlers.skip_failed` consumes them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch.utils.data import Dataset

__all__ = ["ERROR_KEY", "FAILED_KEY", "FailureTolerantDataset", "reported_cause"]

FAILED_KEY = "failed_case"
ERROR_KEY = "failure"


def reported_cause(error: BaseException) -> str:
    """``"Type: message"`` of the first error in the cause chain that is not MONAI's "applying transform ..."
    wrapper: our readers' and checks' errors, which name the file, rather than what they wrap."""
    chain = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    reported = next((e for e in chain if not str(e).startswith("applying transform")), chain[-1])
    return f"{type(reported).__name__}: {reported}"


def _case_label(item: Any) -> str:
    if isinstance(item, Mapping):
        for key in ("case_id", "image"):
            if item.get(key):
                return str(item[key])
    return str(item)


class FailureTolerantDataset(Dataset):
    """A map-style dataset whose loading errors become marker items ``{failed_case, failure}`` instead of
    exceptions, so that the DataLoader (and its worker processes) go on to the next case.

    Args:
        dataset: a MONAI/torch dataset; when it has ``data`` (MONAI's ``Dataset``), failures are named by
            the item's ``case_id`` or image path.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as err:  # noqa: BLE001 - any error of one case is reported, never fatal to the run
            data: Sequence[Any] | None = getattr(self.dataset, "data", None)
            name = _case_label(data[index]) if data is not None else f"item {index}"
            return {FAILED_KEY: name, ERROR_KEY: reported_cause(err)}
