"""Every file and folder name distill writes, in one place.

Readers and writers of an output folder (the pipeline, `distill inspect`, the report, the audit,
the cards) and plugin authors who look inside one take the names from here, so that a renamed
file cannot leave one of them reading the old name.
"""

from __future__ import annotations

#: Output folder (`OUT/`)
RUN_FILE = "run.json"
REPORT_FILE = "report.html"
#: Written by an ablation (benchmarks/bench_distillation.py) beside each run it made: the report shows it.
ABLATION_FILE = "ablation.json"
STAGES_DIR = "stages"
EXPORT_DIR = "export"
MODELS_DIR = "models"
EVAL_DIR = "eval"
STATE_DIR = "state"
STALE_DIR = "stale"
DAMAGED_DIR = "damaged"
#: TensorBoard logs (`tracking: {report_to: tensorboard}`): `OUT/tensorboard/<run name>/`.
TENSORBOARD_DIR = "tensorboard"
#: People's decisions on a stage's records (`OUT/review/<stage>/`), made with `distill review`.
REVIEW_DIR = "review"
DECISIONS_FILE = "decisions.jsonl"

#: A stage folder (`OUT/stages/<stage>/`)
MANIFEST = "manifest.json"
KEPT_SHARD = "kept-{index:05d}.jsonl"
REJECTED_SHARD = "rejected-{index:05d}.jsonl"

#: An evaluate stage's results (`OUT/eval/<stage>/`)
EVAL_FILE = "eval.json"

#: Beside a model's weights: what it is, under which terms, and what made it.
MODEL_MARKER = "distill-model.json"
#: Beside an exported dataset: its combined license tag and provenance summary.
DATASET_SIDECAR = "distill-dataset.json"
#: A training step's own state (its fingerprint and result), for resume.
TRAIN_STATE = "distill-train.json"
#: A training step's checkpoints, under its output folder.
CHECKPOINTS = "checkpoints"

#: A student's manifest: the records it was trained on, for `distill audit` of the model.
STUDENT_MANIFEST = "distill-student.json"

#: The cards: what publishes a dataset's or a model's licenses and audit, beside the data or
#: the weights, and goes wherever they go.
CARD_README = "README.md"
CROISSANT = "croissant.json"
NOTICE = "NOTICE"
AUDIT_JSON = "audit.json"
AUDIT_MD = "AUDIT.md"
#: Every card an export gets (a model gets the same but Croissant, which describes data).
CARD_FILES = (CARD_README, CROISSANT, NOTICE, AUDIT_JSON, AUDIT_MD)

#: distill's cache folder (`$DISTILL_CACHE_DIR`, else `~/.cache/distill/`): the request cache
#: and the converted embedded model.
CACHE_ENV = "DISTILL_CACHE_DIR"
CACHE_FILE = "requests.sqlite"
