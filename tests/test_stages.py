"""The stage declarations (lm_core/stages.py) are the one table: every stage's functions exist
with the one shape, and the flows, the command line, the deployments and the schedules follow
from the declarations, without importing what a stage's run needs."""

from __future__ import annotations

import inspect
import subprocess
import sys

from typer.testing import CliRunner

from lm_core.stages import SCHEDULED_FLOWS, STAGES, Stage


def test_every_stage_names_functions_of_the_one_shape():
    for stage in STAGES:
        key = list(inspect.signature(stage.function("key")).parameters)
        assert key[:3] == ["cfg", "inputs", "ws"], stage.name
        assert len(key) == 3 + stage.refreshable, stage.name  # a refreshable stage's key takes a snapshot label
        assert list(inspect.signature(stage.function("run")).parameters) == ["cfg", "inputs", "ws", "key", "run"]
        if stage.ui:
            assert list(inspect.signature(stage.function("ui")).parameters) == ["cfg", "ref"], stage.name
        if stage.find_input:
            assert list(inspect.signature(stage.function("find_input")).parameters) == ["cfg", "spec", "ws"]
        for name in stage.inputs[1:]:
            assert name in [s.name for s in STAGES], f"{stage.name}: {name} is found upstream: a stage"


def test_a_stages_flow_takes_its_input_by_the_declared_name_and_the_command_line_too():
    from flows.stages import STAGE_FLOWS
    from lmforge.cli import NAMED_INPUTS

    assert list(STAGE_FLOWS) == [s.name for s in STAGES]
    for stage in STAGES:
        params = set(STAGE_FLOWS[stage.name].parameters.model_dump()["properties"])
        assert params == {"config", "force"} | ({stage.input_param} if stage.inputs else set()) | (
            {"refresh"} if stage.refreshable else set()
        ), stage.name
    assert NAMED_INPUTS == {"data": ("pretrain",), "model": ("finetune", "evaluate")}


def test_deployments_and_schedules_follow_the_declarations():
    from deployments.build import FLOWS
    from lm_core.config import SchedulesConfig

    assert list(SCHEDULED_FLOWS) == ["data", "pretrain", "finetune", "evaluate", "register", "lifecycle"]
    assert list(FLOWS) == [*SCHEDULED_FLOWS, "review"]  # review rounds: a flow of no stage
    fields = {f.alias or name for name, f in SchedulesConfig.model_fields.items()}
    assert set(FLOWS) <= fields


def test_a_new_stage_needs_no_table_but_its_declaration(monkeypatch):
    """A declared stage gets a task, a flow with its input parameter, and a place in its flow."""
    import lm_core.stages as stages
    from tasks.stage_task import stage_task

    extra = Stage("echo", "the chunk again", key="x:y", run="x:z", inputs=("chunk",), flow="data")
    monkeypatch.setattr(stages, "STAGES", (*stages.STAGES, extra))
    monkeypatch.setitem(stages.STAGE, "echo", extra)
    assert stage_task("echo").name == "echo"
    assert extra.input_param == "chunk_artifact" and extra in stages.stages_in("data")

    from flows.stages import stage_flow

    assert "chunk_artifact" in stage_flow(extra).parameters.model_dump()["properties"]


def test_reading_the_declarations_and_the_help_imports_no_stage_code():
    code = (
        "import sys; from typer.testing import CliRunner; from lmforge.cli import app; "
        "assert CliRunner().invoke(app, ['stage', '--help']).exit_code == 0; "
        "heavy = [m for m in ('torch', 'trafilatura', 'mlflow', 'lm_core.train.stage') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_lmforge_stage_help_lists_every_stage_and_its_named_inputs():
    from lmforge.cli import app

    out = CliRunner().invoke(app, ["stage", "--help"], env={"COLUMNS": "200"}).output
    assert all(s.name in out for s in STAGES)
    assert "--data" in out and "--model" in out and "--input" in out
