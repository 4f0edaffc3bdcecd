"""First-party tasks: what to ask a teacher and how to read its answer.

`basic`: answer instructions (`response`), grow new ones from seeds (`self-instruct`);
`evol_instruct`: rewrite instructions into harder and rarer ones over generations.
"""

from distill_plugins.tasks.basic import ResponseTask, SelfInstructTask

__all__ = ["ResponseTask", "SelfInstructTask"]
