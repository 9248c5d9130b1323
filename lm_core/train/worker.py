"""One rank of a torchrun pretraining job: `python -m lm_core.train.worker <spec.json>`.

The parent (`lm_core.train.stage`) created the MLflow run; rank 0 logs to it by id and writes
the run's summary for the parent to publish. Other ranks only train.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

from lm_core.config import Config
from lm_core.tracking import MlflowTracker
from lm_core.train.loop import TrainData, train
from lm_core.train.stage import NewStepsOnly, _summary, sampler
from lm_core.workspace import write_json_atomic


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    cfg = Config.model_validate(spec["config"])
    rank = int(os.environ.get("RANK", "0"))
    chunk_dir, out = Path(spec["chunk_dir"]), Path(spec["out_dir"])
    tracker = NewStepsOnly(MlflowTracker(spec["tracking_uri"], "", "", run_id=spec["run_id"])) if rank == 0 else None
    result = train(
        cfg.pretrain,
        cfg.model,
        TrainData.from_chunk(chunk_dir),
        out,
        cfg.seed,
        tracker=tracker,
        sample_fn=sampler(cfg, chunk_dir) if rank == 0 else None,
    )
    if rank == 0:
        write_json_atomic(out / "_summary.json", _summary(result))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
