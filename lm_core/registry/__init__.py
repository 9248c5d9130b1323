"""The MLflow model registry and serving: log a trained model as a pyfunc "models from code",
register it with the champion/challenger gate, and load any model a user names."""

from lm_core.registry.gate import GateDecision, decide
from lm_core.registry.log import log_text_model
from lm_core.registry.register import (
    CHALLENGER,
    CHAMPION,
    Champion,
    RegistrationResult,
    current_champion,
    register_model,
)
from lm_core.registry.resolve import ModelNotFound, load_text_model

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "Champion",
    "GateDecision",
    "ModelNotFound",
    "RegistrationResult",
    "current_champion",
    "decide",
    "load_text_model",
    "log_text_model",
    "register_model",
]
