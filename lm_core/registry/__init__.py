"""The MLflow model registry and serving: log a trained model as a pyfunc "models from code",
register it with the champion/challenger gate, and load any model a user names.

    gate.py          does a challenger replace the champion? (pure: no MLflow)
    log.py           log a model folder into a run as a pyfunc
    pyfunc_model.py  the pyfunc's code: prompts in, generated text out
    describe.py      what the registry says of a model in words (descriptions)
    register.py      a registry version with its aliases, tags and reason; resumable by its key
    resolve.py       load a model from models:/..., a folder, a checkpoint or a fingerprint
                     (what a spec names: `lm_core.model_spec`)
    stage.py         the `register` artifact: log the evaluation, score the champion, register
    promote.py       what people decided in a review (registry.human_review): champion moves on approval
"""
