"""`distill push`: upload an export or a student to the Hugging Face Hub, only when its audit clears.

The audit is run again at push time, for the release the command names, because the one
saved at export time may predate an acknowledgement, a registry update or a changed policy.
Only a cleared verdict uploads, and the refreshed cards (with the acknowledgements and their
reasons) go up with the data, so what is published says why it was allowed.

What goes up is the artefact as a user would load it: the data files and cards of an export;
the weights, tokenizer, configuration and cards of a student. distill's own bookkeeping stays
home (training state, checkpoints, the lineage marker, which holds local paths). The token
comes from the environment (`HF_TOKEN`, read by huggingface_hub) and the endpoint from
`HF_ENDPOINT`; neither is written anywhere.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.audit.base import AuditReport
from distill.audit.target import Target
from distill.errors import ConfigError, DistillError, scrub
from distill.layout import MODEL_MARKER, STUDENT_MANIFEST, TRAIN_STATE
from distill.secrets import replace_values

#: What a release is made of, by suffix (cards: README.md, NOTICE, croissant.json, audit.json,
#: AUDIT.md). Anything else in the folder stays home: a push publishes what was audited.
_EXPORT_SUFFIXES = {".arrow", ".parquet", ".jsonl", ".json", ".md"}
_STUDENT_SUFFIXES = {".safetensors", ".bin", ".gguf", ".json", ".jinja", ".txt", ".model", ".tiktoken", ".md"}
_ALWAYS = {"NOTICE", "LICENSE"}
#: distill's and the trainer's bookkeeping: training state, logs, pickled arguments, and the
#: lineage marker (it holds local paths; the card carries the lineage).
_NEVER = {MODEL_MARKER, TRAIN_STATE, STUDENT_MANIFEST, "training_log.json", "trainer_state.json", "training_args.bin"}
#: Files the hub keeps in every repository, which a push leaves alone.
_HUB_FILES = {".gitattributes"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


class PublishError(DistillError):
    """The hub refused or could not be reached; nothing is claimed to be published."""


@dataclass
class Upload:
    """What a push sends: where, as which kind of repository, and exactly which files."""

    repo_id: str
    repo_type: str
    files: list[str]
    url: str | None = None
    deleted: list[str] = field(default_factory=list)


def check_repo_id(repo: str) -> str:
    if not _REPO_ID.match(repo) or ".." in repo or repo.endswith((".git", ".")):
        raise ConfigError(f"--repo {repo!r}: expected ORG/NAME (letters, digits, '-', '_', '.')")
    return repo


def release_files(target: Target) -> list[str]:
    """The artefact's files, relative to its folder, sorted: its data or weights, configuration,
    tokenizer and cards; never hidden or temporary files, checkpoints or bookkeeping."""
    root = _root(target)
    suffixes = _EXPORT_SUFFIXES if target.kind == "dataset" else _STUDENT_SUFFIXES
    files = []
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        name = path.name
        wanted = path.suffix in suffixes or name in _ALWAYS or name.startswith(("LICENSE", "NOTICE"))
        if wanted and not name.startswith(".") and name not in _NEVER:
            files.append(name)
    return files


def _root(target: Target) -> Path:
    return target.export_path if target.kind == "dataset" and target.export_path is not None else target.root


def hub_token() -> str:
    """The token huggingface_hub will send (HF_TOKEN, else `hf auth login`'s): checked before
    anything is uploaded, so a missing one is a clear error and not a hub's 401."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ConfigError("no Hugging Face token: set HF_TOKEN (or run `hf auth login`) to push")
    return token


def upload(target: Target, report: AuditReport, repo_id: str, private: bool, revision: str | None) -> Upload:
    """Create the repository if needed and commit the artefact's files in one commit; refuses
    anything but a cleared audit, whoever calls it."""
    if report.verdict != "cleared":
        raise PublishError(f"the audit is {report.verdict}: nothing is uploaded")
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    token = hub_token()
    root = _root(target)
    repo_type = "dataset" if target.kind == "dataset" else "model"
    files = release_files(target)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        # The repository becomes exactly the audited artefact: files an earlier push left (a
        # shard, a weight file) would otherwise stay published beside it, unaudited.
        stale = set(api.list_repo_files(repo_id, repo_type=repo_type, revision=revision)) - set(files) - _HUB_FILES
        operations: list[Any] = [CommitOperationDelete(path_in_repo=f) for f in sorted(stale)]
        operations += [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(root / f)) for f in files]
        commit = api.create_commit(
            repo_id,
            operations,
            commit_message=f"distill push: {report.release.what} release {report.release.name or repo_id}",
            commit_description=f"License audit for a {report.release.use} release: {report.verdict}.",
            repo_type=repo_type,
            revision=revision,
        )
    except Exception as exc:  # the hub's and the network's errors, whatever library raised them
        message = replace_values(scrub(str(exc)), {token: "$HF_TOKEN"})
        raise PublishError(f"uploading to {repo_id} failed: {type(exc).__name__}: {message}") from None
    return Upload(repo_id, repo_type, files, str(commit.commit_url), sorted(stale))
