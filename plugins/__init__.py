"""First-party distill plugins, installed as `distill_plugins`, grouped by kind: teachers/,
filters/, trainers/, and the tasks, rankers and evaluators modules.

They register through the `distill` entry-point group exactly like third-party plugins.
"""

from distill import deprecated

#: Module paths before the plugins were grouped by kind (0.1.0), served until 0.3.0 with a
#: warning: an environment installed from 0.1.0 still names them in its entry points.
MOVED_MODULES: dict[str, str] = {
    "distill_plugins.decontamination": "distill_plugins.filters.decontamination",
    "distill_plugins.dedup": "distill_plugins.filters.dedup",
    "distill_plugins.language": "distill_plugins.filters.language",
    "distill_plugins.license_policy": "distill_plugins.filters.license_policy",
    "distill_plugins.novelty": "distill_plugins.filters.novelty",
    "distill_plugins.openai_teacher": "distill_plugins.teachers.openai",
    "distill_plugins.pii": "distill_plugins.filters.pii",
    "distill_plugins.quality": "distill_plugins.filters.quality",
    "distill_plugins.semantic": "distill_plugins.filters.semantic",
    "distill_plugins.transformers_teacher": "distill_plugins.teachers.transformers",
    "distill_plugins.vllm_teacher": "distill_plugins.teachers.vllm",
}

deprecated.alias_modules(MOVED_MODULES)
