"""Experiment tracking through MONAI's own ``--tracking mlflow`` option (a real MLflow store on disk)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_unet_bundle import TINY, run_bundle

mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed (pip install -e '.[tracking]')")


@pytest.mark.slow  # an optional extra; about 45 s on 2 cores, 15-20 s more than a tiny training without MLflow
@pytest.mark.integration
def test_tracking_mlflow_logs_losses_and_validation_dice(tmp_path: Path) -> None:
    epochs = ["--epochs", "2", "--iterations_per_epoch", "2", "--val_interval", "1"]
    run_bundle("training", ["bundles/unet/train.json"], tmp_path, *TINY, *epochs, "--tracking", "mlflow")
    from monai.utils import path_to_sqlite_uri

    client = mlflow.tracking.MlflowClient(tracking_uri=path_to_sqlite_uri(str(tmp_path / "eval" / "mlruns.db")))
    experiment = client.get_experiment_by_name("monai_experiment")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 4  # one per iteration
    assert len(client.get_metric_history(run.info.run_id, "val_mean_dice")) == 2  # one per validation
