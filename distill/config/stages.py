"""The stages a config lists, and the checks that span stages (a train step's data must be an
earlier export; an evaluation's student an earlier train stage)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distill.errors import suggest
from distill.io.seeds import SeedSource


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginRef(StrictModel):
    """A plugin picked by name, with its options (validated against the plugin's model)."""

    plugin: str = Field(description="Registered plugin name; `distill plugins` lists them.")
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"plugin": data} if isinstance(data, str) else data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        """The schema accepts the shorthand the loader does: a plugin's bare name."""
        schema = handler.resolve_ref_schema(handler(core_schema))
        return {
            "anyOf": [
                {"type": "string", "description": "A plugin's name, with default options."},
                {k: v for k, v in schema.items()},
            ]
        }


class _Stage(StrictModel):
    name: str = Field("", description="Unique stage name; defaults to the kind.")


class RayOptions(StrictModel):
    """Where a stage's Ray cluster is: an existing one, or a local one started for the run."""

    address: str | None = Field(
        None,
        description="null: start a local Ray cluster in this process; 'auto': "
        "the cluster `ray start` runs on this machine; 'ray://HOST:PORT' (Ray Client) or "
        "'HOST:PORT' (its GCS): a remote one, where distill and the stage's "
        "plugins must be installed on every node.",
    )
    num_cpus: int | None = Field(
        None,
        ge=1,
        description="CPUs of the local cluster started when `address` is null (default: all of this machine's).",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and value != "auto" and not re.fullmatch(r"(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+", value):
            raise ValueError(f"address must be null, 'auto', 'ray://HOST:PORT' or 'HOST:PORT' (got {value!r})")
        return value

    @model_validator(mode="after")
    def _cpus_only_when_local(self) -> RayOptions:
        if self.num_cpus is not None and self.address is not None:
            raise ValueError("num_cpus sizes a local cluster (address: null); an existing cluster has its own CPUs")
        return self


class RayTeacherOptions(RayOptions):
    """The cluster, and the replicas a generate or rank stage runs there: one Ray actor each, with
    its own engine (a vLLM engine, a transformers model, an API client with its share of the
    teacher's concurrency and rate limits, a rank stage's reward model)."""

    actors: int = Field(1, ge=1, description="Replicas of the teacher (or ranker), one Ray actor and one engine each.")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs Ray reserves for each actor.")
    gpus_per_actor: float = Field(
        0.0,
        ge=0,
        description="GPUs per actor: for vLLM, tensor_parallel_size x "
        "data_parallel_size of the teacher's options (0: CPU engines or API clients).",
    )


def _ray_options_need_ray(cls: Any, value: Any, info: Any) -> Any:
    if value is not None and info.data.get("executor", "local") != "ray":
        raise ValueError(
            "ray options apply to `executor: ray` only; this stage runs locally (set executor: ray, or remove `ray`)"
        )
    return value


class _ReplicatedStage(_Stage):
    """A stage whose teacher (or ranker) can run as replicas in Ray actors."""

    executor: Literal["local", "ray"] = Field(
        "local",
        description="Where the stage's teacher runs: `local` "
        "(this process) or `ray` (replicas in Ray actors, `pip install "
        "'distill[ray]'`; a rank stage without a judge teacher replicates "
        "its ranker): the same records, see docs/scaling.md.",
    )
    ray: RayTeacherOptions | None = Field(None, description="The Ray cluster and the replicas, for `executor: ray`.")

    _ray_needs_ray = field_validator("ray")(_ray_options_need_ray)


class GenerateStage(_ReplicatedStage):
    kind: Literal["generate"]
    task: PluginRef = Field(description="What to ask: `response`, `self-instruct`, ...")
    teacher: str = Field(description="Key of an entry in `teachers`.")
    batch_size: int = Field(32, ge=1, description="Records per committed shard.")


class RankStage(_ReplicatedStage):
    kind: Literal["rank"]
    ranker: PluginRef = Field(description="How to score candidates: `judge`, `reward-model`, `reward-function`.")
    teacher: str | None = Field(None, description="Key in `teachers` of the judge model, for rankers that need one.")
    batch_size: int = Field(32, ge=1)


class FilterStage(_Stage):
    kind: Literal["filter"]
    filters: list[PluginRef] = Field(min_length=1)
    batch_size: int = Field(1000, ge=1)
    executor: Literal["local", "ray"] = Field(
        "local",
        description="Where the filters run: `local` (this "
        "process) or `ray` (Ray Data, `pip install 'distill[ray]'`): the "
        "same decisions and shards, see docs/scaling.md.",
    )
    ray: RayOptions | None = Field(None, description="The Ray cluster, for `executor: ray`.")

    _ray_needs_ray = field_validator("ray")(_ray_options_need_ray)


class ExportStage(_Stage):
    kind: Literal["export"]
    format: Literal["sft", "preference"] = "sft"


class ReviewStage(_Stage):
    """People's decisions (made with `distill review OUT --stage <the stage before this one>`)
    applied to the records before it: accepted kept, rejected dropped with the reviewer's
    reason, rankings and choices as candidate scores, edits as `edited` events; the reviewers
    are `human` models in provenance under `license`."""

    kind: Literal["review"]
    unreviewed: Literal["keep", "drop", "wait"] = Field(
        "keep",
        description="Records nobody decided on: `keep` them as they are, `drop` them, or `wait` "
        "(the stage fails, saying how many are left, until every record has a decision).",
    )
    conflicts: Literal["drop", "latest"] = Field(
        "drop",
        description="Reviewers who disagree on a record (accept vs reject, or a different best "
        "candidate): `drop` it, naming who said what, or follow whoever decided `latest`.",
    )
    reviewers: list[str] | None = Field(
        None, description="Only these reviewers' decisions count (default: everyone's)."
    )
    license: str = Field(
        "LicenseRef-Own-Work",
        description="Terms of the reviewers' work (rankings, edits), audited like a model's: "
        "by default your own; set it when annotators work under a contract or a data license.",
    )


class TrainStep(StrictModel):
    """One trainer run; a stage's steps form a chain, each starting from the previous output."""

    name: str = Field("", description="Step name (its output folder); defaults to the trainer's name.")
    trainer: str = Field(
        description="Registered trainer plugin: `sft`, `reward-model`, `dpo`, `grpo`, `distillation`, ..."
    )
    # `str` only for the schema: the validator below makes one name a list.
    data: list[str] | str = Field(min_length=1, description="Export stages, by name, whose datasets it trains on.")
    student: str | None = Field(
        None,
        description="Where it starts: an earlier step's name, a local model "
        "folder or 'embedded'; default: the previous step's output.",
    )
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("data", mode="before")
    @classmethod
    def _one(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class TrainStage(_Stage):
    kind: Literal["train"]
    student: str = Field("embedded", description="The base model: a local model folder (safetensors) or 'embedded'.")
    student_license: str | None = Field(
        None, description="The base model's terms (SPDX), when its folder does not declare them."
    )
    model_name: str | None = Field(
        None,
        description="The student's release name, checked against required "
        "name prefixes; default: `release.name`, else the stage name.",
    )
    steps: list[TrainStep] = Field(min_length=1)
    processes: int = Field(
        1,
        ge=1,
        description="Training processes; above 1 the steps run under "
        "`accelerate launch` (DDP; FSDP or DeepSpeed via accelerate_args).",
    )
    accelerate_args: list[str] = Field(
        default_factory=list, description="Extra `accelerate launch` arguments, e.g. ['--config_file', 'fsdp.yaml']."
    )

    @field_validator("steps")
    @classmethod
    def _name_steps(cls, steps: list[TrainStep]) -> list[TrainStep]:
        counts: dict[str, int] = {}
        for s in steps:
            counts[s.trainer] = counts.get(s.trainer, 0) + 1
        for j, s in enumerate(steps):
            if not s.name:
                s.name = s.trainer if counts[s.trainer] == 1 else f"{s.trainer}-{j}"
        seen: set[str] = set()
        for j, s in enumerate(steps):
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", s.name):
                raise ValueError(f"step name {s.name!r} must be letters, digits, '.', '_' or '-'")
            if s.name in seen:
                raise ValueError(f"duplicate step name {s.name!r}")
            if s.student is not None and s.student in {t.name for t in steps[j:]}:
                raise ValueError(f"step {s.name!r} starts from {s.student!r}, which is not an earlier step")
            seen.add(s.name)
        return steps


class Contender(StrictModel):
    """A model the evaluation compares: a base model, a configured teacher, or a trained student."""

    name: str = Field(description="Its name in the results: `base`, `teacher`, `student`, ...")
    model: str | None = Field(None, description="'embedded' or a local model folder, answered by `engine`.")
    teacher: str | None = Field(None, description="Key in `teachers`: answers with that teacher's engine and sampling.")
    student: str | None = Field(
        None,
        description="An earlier train stage (its final model) or "
        "'stage.step' (that step's model), answered by `engine`.",
    )
    system_prompt: str | None = Field(
        None,
        description="Sent before every question (the prompted teacher); "
        "default none, as a student is meant to be used.",
    )
    prefix: str | None = Field(
        None,
        description="Start every answer with this text (assistant prefill), as the `response` task's "
        "`prefix` does: a teacher is then evaluated exactly as it wrote the data.",
    )
    best_of: int = Field(
        1,
        ge=1,
        le=64,
        description="Sample this many answers per question and keep the one `ranker` scores highest: "
        "the ceiling of the teacher *system*, which uses the ranker at inference time.",
    )
    ranker: PluginRef | None = Field(None, description="What picks the best of `best_of` answers.")
    judge: str | None = Field(None, description="Key in `teachers` of the judge model, for a ranker that needs one.")

    @model_validator(mode="after")
    def _one_source(self) -> Contender:
        given = [k for k in ("model", "teacher", "student") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"contender {self.name!r} needs exactly one of model, teacher, student "
                f"(got {', '.join(given) or 'none'})"
            )
        if self.best_of > 1 and self.ranker is None:
            raise ValueError(f"contender {self.name!r}: best_of {self.best_of} needs a `ranker` to choose with")
        if self.ranker is not None and self.best_of == 1:
            raise ValueError(f"contender {self.name!r}: a `ranker` chooses among answers; set best_of > 1")
        if self.judge is not None and self.ranker is None:
            raise ValueError(f"contender {self.name!r}: `judge` lends a model to a `ranker`; set one")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise ValueError(f"contender name {self.name!r} must be letters, digits, '.', '_' or '-'")
        return self

    @property
    def kind(self) -> str:
        return "teacher" if self.teacher else "student" if self.student else "model"


class EvaluateStage(_Stage):
    """Held-out questions answered by every contender, scored by every evaluator. Records pass
    through unchanged; the results go to `OUT/eval/<stage>/eval.json`."""

    kind: Literal["evaluate"]
    # `str` only for the schema: the validator below makes a path a SeedSource.
    data: SeedSource | str = Field(
        description="The held-out set, read like a seed file (`path`, fields, "
        "`limit`); never used for training: point the decontamination "
        "filter at it."
    )
    contenders: list[Contender] = Field(min_length=1)
    evaluators: list[PluginRef] = Field(
        min_length=1, description="`rubric`, `judge-win-rate`, `perplexity`, or any evaluator plugin."
    )
    engine: PluginRef = Field(
        default_factory=lambda: PluginRef(plugin="transformers", options={"temperature": 0.0, "max_tokens": 128}),
        description="The teacher plugin that answers for `model` and "
        "`student` contenders; its options minus `model` (default: transformers, greedy, 128 tokens).",
    )
    worst: int = Field(5, ge=0, description="Worst-scored items kept per metric and contender for the error analysis.")

    @property
    def held_out(self) -> SeedSource:
        """`data` as the validator left it: always a SeedSource."""
        assert isinstance(self.data, SeedSource), self.data
        return self.data

    @field_validator("data", mode="before")
    @classmethod
    def _path_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("contenders")
    @classmethod
    def _unique(cls, contenders: list[Contender]) -> list[Contender]:
        names = [c.name for c in contenders]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate contender name {dupes[0]!r}")
        return contenders


Stage = Annotated[
    GenerateStage | RankStage | FilterStage | ReviewStage | ExportStage | TrainStage | EvaluateStage,
    Field(discriminator="kind"),
]


def stage_ref_errors(cfg: Any, registry: Any) -> list[str]:
    """A train step reads exports made earlier in the same run, in a format its trainer reads; an
    evaluation's students come from earlier train stages."""
    errors: list[str] = []
    exports: dict[str, str] = {}
    trained: dict[str, list[str]] = {}
    for i, s in enumerate(cfg.stages):
        if isinstance(s, ExportStage):
            exports[s.name] = s.format
        if isinstance(s, EvaluateStage):
            errors.extend(_student_errors(i, s, trained))
        if isinstance(s, TrainStage):
            trained[s.name] = [t.name for t in s.steps]
        if not isinstance(s, TrainStage):
            continue
        for j, step in enumerate(s.steps):
            try:
                formats = registry.get("trainer", step.trainer).cls.formats
            except Exception:
                formats = None
            for k, name in enumerate(step.data):
                where = f"stages[{i}].steps[{j}].data[{k}]"
                if name not in exports:
                    known = ", ".join(repr(e) for e in exports) or "none"
                    errors.append(
                        f"{where}: {name!r} is not an export stage before this one "
                        f"(export stages so far: {known}){suggest(name, list(exports))}"
                    )
                elif formats is not None and exports[name] not in formats:
                    errors.append(
                        f"{where}: the {step.trainer} trainer reads {' or '.join(formats)} exports; "
                        f"{name!r} is a {exports[name]} export"
                    )
    return errors


def _student_errors(i: int, stage: EvaluateStage, trained: dict[str, list[str]]) -> list[str]:
    errors = []
    for j, c in enumerate(stage.contenders):
        if c.student is None:
            continue
        name, _, step = c.student.partition(".")
        where = f"stages[{i}].contenders[{j}].student"
        if name not in trained:
            known = ", ".join(repr(t) for t in trained) or "none"
            errors.append(
                f"{where}: {name!r} is not a train stage before this one (train stages so far: "
                f"{known}){suggest(name, list(trained))}"
            )
        elif step and step not in trained[name]:
            errors.append(
                f"{where}: train stage {name!r} has no step {step!r} (steps: "
                f"{', '.join(trained[name])}){suggest(step, trained[name])}"
            )
    return errors
