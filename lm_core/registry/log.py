"""Log a trained model folder into an existing MLflow run as a pyfunc "models from code".

Logged model layout (what `mlflow.pyfunc.load_model` and `mlflow models serve` read):

    MLmodel, requirements.txt, python_env.yaml, input_example.json, serving_input_example.json
    pyfunc_model.py                   the model's code (`pyfunc_model.py` of this package)
    code/lm_core/                     a copy of the library, put on sys.path at load time
    artifacts/model/                  model.safetensors, model_config.json, tokenizer.json

Why not `mlflow.pyfunc.log_model`: it logs into the fluent API's active run, which is kept per
thread (and `mlflow.models.Model.log(run_id=...)` still reads the process-wide tracking URI).
Inside Prefect's thread pools neither is safe, so this module saves the model to a temporary
folder with `mlflow.pyfunc.save_model` (no tracking at all) and logs it with an `MlflowClient`
bound to the given tracking URI: create the LoggedModel with the run as its source, upload
its files, record it as the run's output, mark it READY. That is what `Model.log` does, minus
the global state.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

import lm_core
from lm_core.model_folder import CHAT, ModelLoadError, missing_files, model_files
from lm_core.registry import pyfunc_model

MODEL_CODE = Path(pyfunc_model.__file__)
LM_CORE_DIR = Path(lm_core.__file__).parent
# What the model's code imports when it is loaded (lm_core.textgen and the modules it imports).
RUNTIME_DISTRIBUTIONS = (
    "mlflow",
    "torch",
    "safetensors",
    "tokenizers",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "PyYAML",
)

_DTYPES = {"max_new_tokens": "long", "temperature": "double", "top_k": "long", "top_p": "double", "seed": "long"}
SIGNATURE = ModelSignature(
    inputs=pyfunc_model.INPUT_SCHEMA,  # prompt or messages, and per-row settings
    outputs=Schema([ColSpec("string", pyfunc_model.TEXT)]),
    params=ParamSchema([ParamSpec(k, _DTYPES[k], v) for k, v in pyfunc_model.SETTINGS.items()]),
)
INPUT_EXAMPLE = (pd.DataFrame({pyfunc_model.PROMPT: ["The quick brown fox"]}), {"max_new_tokens": 16})


def pip_requirements() -> list[str]:
    """The runtime libraries pinned to the versions installed here. A local build label
    (torch's `+cpu`) is dropped: the serving machine picks its own build of that version."""
    return [f"{dist}=={metadata.version(dist).split('+')[0]}" for dist in RUNTIME_DISTRIBUTIONS]


def log_text_model(
    tracking_uri: str, run_id: str, model_dir: str | Path, name: str = "model", tags: dict[str, str] | None = None
) -> str:
    """Log the model folder `model_dir` (model.safetensors, model_config.json, tokenizer.json)
    into run `run_id` as a pyfunc named `name`, with `tags`; returns its URI, `models:/<model_id>`."""
    model_dir = Path(model_dir)
    missing = missing_files(model_dir)
    if missing:
        raise ModelLoadError(f"{model_dir} is not a model folder: {', '.join(missing)} missing")
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    logged = client.create_logged_model(
        experiment_id=run.info.experiment_id, name=name, source_run_id=run_id, model_type="text-generation", tags=tags
    )
    try:
        with tempfile.TemporaryDirectory(prefix="lmforge-log-") as tmp:
            # The MLmodel file names the logged model and its run, as `Model.log` writes it.
            mlmodel = Model(
                artifact_path=logged.artifact_location,
                model_uuid=logged.model_id,
                model_id=logged.model_id,
                run_id=run_id,
            )
            client.log_model_artifacts(logged.model_id, str(_save(Path(tmp), model_dir, mlmodel)))
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return f"models:/{logged.model_id}"


def _save(tmp: Path, model_dir: Path, mlmodel: Model) -> Path:
    """Write the MLflow model folder under `tmp`, with only the files a model needs (a pretrain
    artifact also holds the optimizer state and logs, which have no place in a registry)."""
    weights = tmp / pyfunc_model.MODEL_ARTIFACT
    weights.mkdir()
    for f in model_files(model_dir):
        _link_or_copy(model_dir / f, weights / f)
    if (model_dir / CHAT).is_file():  # a chat model: prompts are user messages
        _link_or_copy(model_dir / CHAT, weights / CHAT)
    code = tmp / "code" / "lm_core"
    shutil.copytree(LM_CORE_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp / "mlflow-model"
    mlflow.pyfunc.save_model(
        path=str(out),
        python_model=str(MODEL_CODE),
        artifacts={pyfunc_model.MODEL_ARTIFACT: str(weights)},
        code_paths=[str(code)],
        signature=SIGNATURE,
        input_example=INPUT_EXAMPLE,
        pip_requirements=pip_requirements(),
        mlflow_model=mlmodel,
    )
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # weights can be large: no copy where the filesystem allows it
    except OSError:
        shutil.copy2(src, dst)
