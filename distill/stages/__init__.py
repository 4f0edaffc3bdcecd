"""The stage runners: one per kind of stage (`runners.RUNNERS`), each given the run's `RunContext`.

The work a stage does on its records, in this process, is `distill.executor.local`; on a Ray
cluster, `distill.ray`.
"""

from distill import deprecated

__getattr__ = deprecated.moved_names(__name__)
