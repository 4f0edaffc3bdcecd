"""Security: secrets leak nowhere, nothing executes code from the output or the cache, models
load from safetensors, YAML is loaded safely, names cannot write outside the output folder,
text in the cards is escaped, and plugins come only from installed entry points.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.config.loader import parse_config
from distill.errors import ConfigError, PluginError
from distill.pipeline import Pipeline
from distill.registry import make_registry

from . import reliability_plugins
from .harness import child_env, crash_config, distill, read_output, scan, scan_text

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(ROOT / "distill").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")])


def canary() -> str:
    return f"sk-canary-{secrets.token_hex(12)}"


def _isolated_env(plugin_env: dict[str, str], home: Path, **extra: str) -> dict[str, str]:
    """Every place a run may write (home, caches) is inside `home`, so the scan sees it all."""
    for d in ("home", "cache", "hf", "tmp"):
        (home / d).mkdir(parents=True, exist_ok=True)
    return child_env(
        plugin_env,
        HOME=str(home / "home"),
        DISTILL_CACHE_DIR=str(home / "cache"),
        HF_HOME=str(home / "hf"),
        XDG_CACHE_HOME=str(home / "cache"),
        TMPDIR=str(home / "tmp"),
        **extra,
    )


# -- secrets ---------------------------------------------------------------------------------


@pytest.mark.slow  # runs the CLI pipeline in subprocesses
def test_a_canary_key_appears_in_no_file_log_cache_report_or_card(tmp_path, plugin_env, figures):
    """A key given the ways users give keys (a ${VAR} in an option, the provider's usual
    variable), a full run, inspect, audit and cache commands, and two failing runs whose error
    messages could echo it: then every byte written and printed is searched for it."""
    key = canary()
    work = tmp_path / "work"
    work.mkdir()
    config = crash_config(work, extra={"cache": {"enabled": True}})
    cfg = yaml.safe_load(config.read_text())
    cfg["teachers"]["writer"]["options"]["api_key"] = "${DISTILL_CANARY_KEY}"
    cfg["release"] = {"use": "research"}
    config.write_text(yaml.safe_dump(cfg))
    env = _isolated_env(plugin_env, tmp_path, DISTILL_CANARY_KEY=key, OPENAI_API_KEY=key, HF_TOKEN=key)
    outputs: list[str] = []

    def run(*args: str, ok: bool = True) -> None:
        r = distill(*args, env=env, cwd=work)
        outputs.extend([r.stdout, r.stderr])
        if ok:
            assert r.returncode in (0, 1), r.stderr  # audit exits 1 when not cleared
            assert "Traceback" not in r.stderr, r.stderr

    run("run", str(config))
    run("inspect", str(work / "out"))
    run("inspect", str(work / "out"), "--json")
    run("audit", str(work / "out"), "--use", "research", "--format", "json")
    run("audit", str(work / "out"), "--use", "commercial", "--output", str(work / "audit.md"))
    run("cache", "stats")
    run("cache", "explain")
    run("plugins", "--json")
    # Failing runs: the key put in a field that is checked (its error message must not echo it),
    # and a key that is wrong for a stage that is redone.
    bad = dict(cfg, output="out-bad")
    bad["teachers"] = {
        **cfg["teachers"],
        "writer": {"plugin": "counting-echo", "options": {"license": "${DISTILL_CANARY_KEY}"}},
    }
    (work / "bad.yaml").write_text(yaml.safe_dump(bad))
    run("run", str(work / "bad.yaml"), ok=False)
    bad["teachers"]["writer"]["options"] = {"n": "${DISTILL_CANARY_KEY}"}
    (work / "bad.yaml").write_text(yaml.safe_dump(bad))
    run("run", str(work / "bad.yaml"), ok=False)
    bad["seeds"] = [{"path": "seeds.jsonl", "license": "${DISTILL_CANARY_KEY}"}]
    (work / "bad.yaml").write_text(yaml.safe_dump(bad))
    run("run", str(work / "bad.yaml"), ok=False)

    assert (work / "out" / "export" / "sft" / "README.md").is_file()
    files, hits = scan([tmp_path], key)
    hits += scan_text(outputs, key)
    figures.add(secrets_found=len(hits), files_scanned=files, canary_runs=1)
    assert files > 50
    assert not hits, hits


# -- no pickle, safetensors, safe YAML -------------------------------------------------------

#: Calls that can run code from the data they load, with the argument that makes them safe.
UNSAFE_CALLS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("cPickle", "load"),
    ("cPickle", "loads"),
    ("dill", "load"),
    ("dill", "loads"),
    ("cloudpickle", "load"),
    ("cloudpickle", "loads"),
    ("joblib", "load"),
    ("marshal", "load"),
    ("marshal", "loads"),
    ("shelve", "open"),
    ("yaml", "unsafe_load"),
    ("yaml", "full_load"),
    ("yaml", "unsafe_load_all"),
    ("pd", "read_pickle"),
    ("pandas", "read_pickle"),
}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                yield node, f.value.id, f.attr
            elif isinstance(f, ast.Name):
                yield node, None, f.id


def _kw(node: ast.Call, name: str):
    for k in node.keywords:
        if k.arg == name:
            return k.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_no_code_executing_loader_is_called_anywhere_in_distill_or_its_plugins(figures):
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, owner, name in _calls(tree):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if (owner, name) in UNSAFE_CALLS:
                problems.append(f"{where}: {owner}.{name}")
            elif owner == "torch" and name == "load" and not _is_true(_kw(node, "weights_only")):
                problems.append(f"{where}: torch.load without weights_only=True")
            elif owner == "yaml" and name in ("load", "load_all"):
                loader = _kw(node, "Loader")
                if not (isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")):
                    problems.append(f"{where}: yaml.{name} without a safe Loader")
            elif owner in ("np", "numpy") and name == "load" and _is_true(_kw(node, "allow_pickle")):
                problems.append(f"{where}: numpy.load(allow_pickle=True)")
            elif owner is None and name in ("eval", "exec", "__import__"):
                problems.append(f"{where}: {name}()")
    figures.add(source_files_checked=len(SOURCES))
    assert not problems, problems


def _loads_weights(node: ast.Call, owner, name) -> bool:
    """A `from_pretrained` that loads weights (not a tokenizer or a config)."""
    if name != "from_pretrained":
        return False
    target = owner or ""
    return not any(t in target for t in ("Tokenizer", "Config", "Processor")) and target != "GenerationConfig"


@pytest.mark.parametrize(
    "path", [p for p in SOURCES if "from_pretrained" in p.read_text()], ids=lambda p: str(p.relative_to(ROOT))
)
def test_models_are_loaded_from_safetensors_only(path):
    text = path.read_text()
    tree = ast.parse(text)
    unsafe = []
    for node, owner, name in _calls(tree):
        if not _loads_weights(node, owner, name) or _kw(node, "gguf_file") is not None:
            continue  # the embedded model's GGUF file holds tensors only; it is converted to safetensors
        kwargs = _kw(node, "use_safetensors")
        if not _is_true(kwargs) and not any(k.arg is None for k in node.keywords):  # **kwargs checked below
            unsafe.append(f"{path.relative_to(ROOT)}:{node.lineno}: {owner}.from_pretrained")
        elif (
            any(k.arg is None for k in node.keywords)
            and '"use_safetensors"' not in text
            and "use_safetensors=True" not in text
        ):
            unsafe.append(f"{path.relative_to(ROOT)}:{node.lineno}: {owner}.from_pretrained(**kwargs)")
    assert not unsafe, unsafe


class _Sentinel:
    """Unpickling this creates a file: the proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.slow
def test_a_model_folder_with_only_a_pickled_checkpoint_is_refused(tmp_path, tiny_model_dir, figures):
    pytest.importorskip("transformers")
    from distill.plugin import PluginContext
    from distill_plugins.teachers.transformers import TransformersTeacher

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    for p in model.glob("*.safetensors*"):
        p.unlink()
    sentinel = tmp_path / "pwned"
    with open(model / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weights": _Sentinel(sentinel)}, f)
    teacher = TransformersTeacher(model=str(model), max_tokens=4)
    teacher.setup(PluginContext(base_dir=tmp_path, progress=False))
    with pytest.raises(PluginError) as err:
        teacher._load()
    assert "could not load the model" in str(err.value)
    assert not sentinel.exists()
    figures.add(pickles_refused=1)


def test_yaml_tags_that_build_objects_are_refused(tmp_path, figures):
    sentinel = tmp_path / "pwned"
    for text in (
        f"output: !!python/object/apply:os.system ['touch {sentinel}']\n",
        f"output: !!python/object/new:builtins.open ['{sentinel}', 'w']\n",
        "output: !!python/name:os.system\n",
    ):
        path = tmp_path / "config.yaml"
        path.write_text(text)
        from distill.config.loader import load_config

        with pytest.raises(ConfigError, match="invalid YAML"):
            load_config(path)
    assert not sentinel.exists()
    figures.add(bad_inputs=3)


def test_nothing_in_the_output_or_cache_is_unpickled(tmp_path, monkeypatch, figures):
    """A whole run, resumed, inspected and audited in this process, with pickle's loaders
    replaced by ones that fail the test, and planted pickles in the output and cache folders."""
    from distill.audit.release import audit_target, release_targets
    from distill.io.inspect import inspect_output

    loaded: list[str] = []

    def refuse(*args, **kwargs):
        import traceback

        loaded.append("".join(traceback.format_stack(limit=6)))
        raise AssertionError("something tried to unpickle")

    class Refusing(pickle.Unpickler):
        def __init__(self, *args, **kwargs):
            refuse()

    import importlib

    importlib.import_module("datasets")  # imports dill, which subclasses pickle's Unpickler at import time

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", Refusing)
    for mod in ("dill", "multiprocess.reduction", "cloudpickle"):
        try:
            m = __import__(mod, fromlist=["x"])
        except ImportError:
            continue
        for attr in ("load", "loads"):
            if hasattr(m, attr):
                monkeypatch.setattr(m, attr, refuse)
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path / "cache-home"))
    sentinel = tmp_path / "pwned"
    config = crash_config(tmp_path, delay=0.0, filter_delay=0.0)
    for planted in (
        tmp_path / "out" / "stages" / "answers" / "state.pkl",
        tmp_path / "out" / "state" / "x.pkl",
        tmp_path / "cache-home" / "requests.pkl",
        tmp_path / "requests.sqlite.pkl",
    ):
        planted.parent.mkdir(parents=True, exist_ok=True)
        planted.write_bytes(pickle.dumps(_Sentinel(sentinel)))
    from distill.config.loader import load_config

    registry = make_registry(extra=[("reliability", reliability_plugins)])
    for _ in range(2):  # a run, then a resume that reads everything back
        Pipeline(load_config(config), registry, progress=False, log=lambda m: None).run()
    inspect_output(tmp_path / "out")
    for target in release_targets(tmp_path / "out", None, None, "data"):
        audit_target(target, {"use": "research"}, [], registry, where=str(target.root), several=True)
    assert not loaded, loaded[0]
    assert not sentinel.exists()
    figures.add(records_checked=sum(len(k) + len(r) for k, r in read_output(tmp_path / "out").values()))


# -- paths -----------------------------------------------------------------------------------

ESCAPES = [
    "../../escape",
    "../../../../../../../../tmp/distill-escape",
    "/tmp/distill-escape-abs",
    "..",
    "a/../../b",
    "nested/name",
    "..\\..\\win",
]


@pytest.mark.parametrize("name", ESCAPES)
def test_a_stage_name_that_is_a_path_is_a_config_error(tmp_path, name):
    cfg = {
        "output": str(tmp_path / "out"),
        "seeds": [{"path": "s.jsonl", "license": "CC0-1.0"}],
        "stages": [{"kind": "export", "name": name}],
    }
    with pytest.raises(ConfigError, match="stage name"):
        parse_config(cfg)


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.slow  # runs the CLI pipeline in subprocesses
def test_names_and_record_ids_cannot_write_outside_the_output_folder(tmp_path, plugin_env, figures):
    """Every name a user or an upstream file controls is set to a path that escapes (seed set,
    release, teacher key, seed `id` fields, record ids in a committed shard); after a run,
    a resumed run, inspect and audit, nothing new exists outside the output folder and the
    cache file."""
    marker = f"distill-escape-{secrets.token_hex(4)}"
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    config = crash_config(deep, delay=0.0, filter_delay=0.0)
    cfg = yaml.safe_load(config.read_text())
    cfg["seeds"][0]["name"] = f"../../../{marker}-seeds"
    cfg["release"] = {"name": f"../../../{marker}-release", "use": "research"}
    cfg["teachers"][f"../../{marker}-teacher"] = cfg["teachers"].pop("writer")
    cfg["stages"][1]["teacher"] = f"../../{marker}-teacher"
    config.write_text(yaml.safe_dump(cfg))
    with open(deep / "seeds.jsonl", "a") as f:
        f.write(json.dumps({"prompt": f"What is in ../../{marker}?", "id": f"../../../{marker}-id"}) + "\n")
    env = child_env(plugin_env)
    before = _tree(tmp_path)
    r = distill("run", str(config), "--quiet", "--until", "clean", env=env)
    assert r.returncode == 0, r.stderr
    # Record ids are the store's business, but a crafted shard may carry any id: give some
    # committed records ids that are paths, fix the digests, and let the export and audit read them.
    from distill.io.store import StageManifest, atomic_write

    stage = deep / "out" / "stages" / "answers"
    manifest = StageManifest.model_validate_json((stage / "manifest.json").read_bytes())
    shard = manifest.shards[0]
    lines = (stage / shard.kept_file).read_text().splitlines()
    hostile = [f"../../../../{marker}-rid", f"/tmp/{marker}-rid", f"..\\..\\{marker}", f"a/b/../../../{marker}"]
    for i, rid in enumerate(hostile[: len(lines)]):
        rec = json.loads(lines[i])
        rec["id"] = rid
        lines[i] = json.dumps(rec)
    shard.sha256[shard.kept_file] = atomic_write(stage / shard.kept_file, ("\n".join(lines) + "\n").encode())
    atomic_write(stage / "manifest.json", manifest.model_dump_json(indent=1).encode())
    r = distill("run", str(config), "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    assert distill("inspect", str(deep / "out"), env=env).returncode == 0
    r = distill("audit", str(deep / "out"), "--use", "research", "--name", f"../../../{marker}-audit", env=env)
    assert "Traceback" not in r.stderr, r.stderr
    exported = set(read_output(deep / "out")["sft"][0][i].id for i in range(len(read_output(deep / "out")["sft"][0])))
    assert set(hostile[: len(lines)]) & exported  # the hostile ids really went all the way through

    allowed = (deep / "out", deep / "requests.sqlite")
    new = [
        p
        for p in _tree(tmp_path) - before
        if not any(p == a or a in p.parents or str(p).startswith(str(a)) for a in allowed)
    ]
    outside = [p for p in Path("/tmp").glob(f"{marker}*")] + [p for p in tmp_path.parent.glob(f"*{marker}*")]
    figures.add(path_traversal_attempts=4 + len(hostile))
    assert not new and not outside, (new, outside)
    for p in (deep / "out").rglob("*"):  # and nothing inside it has a name made of one of them
        assert marker not in p.name or p.parent.name == "audits", p


@pytest.mark.slow  # runs the CLI pipeline in subprocesses
def test_a_crafted_stage_argument_cannot_write_cards_outside_the_output(tmp_path, plugin_env, figures):
    """`distill audit OUT --stage ../../x` must not read or write beside OUT."""
    config = crash_config(tmp_path, delay=0.0, filter_delay=0.0)
    env = child_env(plugin_env)
    assert distill("run", str(config), "--quiet", env=env).returncode == 0
    out = tmp_path / "out"
    outside = tmp_path / "elsewhere"
    shutil.copytree(out / "stages" / "sft", outside)  # a real export manifest, outside the output
    before = set(outside.iterdir())
    r = distill("audit", str(out), "--stage", "../../elsewhere", "--use", "research", env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert set(outside.iterdir()) == before and not (tmp_path / "export").exists()
    figures.add(path_traversal_attempts=1)


# -- cards -----------------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>|pipe|'


@pytest.mark.slow  # runs the CLI pipeline in subprocesses
def test_text_in_cards_and_audit_reports_is_escaped(tmp_path, plugin_env, figures):
    config = crash_config(tmp_path, delay=0.0, filter_delay=0.0)
    cfg = yaml.safe_load(config.read_text())
    cfg["seeds"][0]["name"] = f"seeds {HOSTILE}"
    cfg["release"] = {"name": f"release {HOSTILE}", "use": "research"}
    config.write_text(yaml.safe_dump(cfg))
    with open(tmp_path / "seeds.jsonl", "a") as f:
        f.write(json.dumps({"prompt": f"Record text {HOSTILE} here?"}) + "\n")
    env = child_env(plugin_env)
    r = distill("run", str(config), "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    r = distill(
        "audit",
        str(tmp_path / "out"),
        "--use",
        "research",
        "--output",
        str(tmp_path / "audit.md"),
        "--ack",
        f"unknown-terms=reason {HOSTILE}",
        env=env,
    )
    assert "Traceback" not in r.stderr
    sft = tmp_path / "out" / "export" / "sft"
    markdown = {p.name: p.read_text() for p in [sft / "README.md", tmp_path / "audit.md"]}
    # The card's YAML front matter is data the Hub parses (safe_dump quotes what needs it); its
    # Markdown body is rendered as HTML (on the Hub, on GitHub), so names in it must be escaped.
    _, front, body = markdown["README.md"].split("---\n", 2)
    assert yaml.safe_load(front)["pretty_name"] == f"release {HOSTILE}"
    markdown["README.md"] = body
    for name, text in markdown.items():
        assert "<script" not in text and "<img" not in text, name
    assert "&lt;script&gt;" in markdown["README.md"] and "&lt;script&gt;" in markdown["audit.md"]
    texts = {
        **markdown,
        **{
            p.name: p.read_text()
            for p in [sft / "NOTICE", sft / "croissant.json", *sorted((tmp_path / "out" / "audits").glob("*"))]
        },
    }
    for name, text in texts.items():
        assert "Record text" not in text, name  # record text is in no card or report at all
    figures.add(cards_checked=len(texts))


# -- plugins ---------------------------------------------------------------------------------

EVIL = """
import pathlib
pathlib.Path({sentinel!r}).write_text("imported")
from distill.hookspecs import hookimpl
"""


@pytest.mark.slow  # runs the CLI in subprocesses
def test_plugins_load_only_from_installed_entry_points_the_allowlist_names(tmp_path, plugin_env, figures):
    """Plugin code lying around (in the config's folder, the output, the working directory, even
    with a `.dist-info` there) is never imported; an installed entry point is, unless
    DISTILL_PLUGINS leaves it out; a config cannot name a module or a file to load."""
    sentinel = tmp_path / "imported"
    work = tmp_path / "work"
    work.mkdir()
    config = crash_config(work, delay=0.0, filter_delay=0.0)
    code = EVIL.format(sentinel=str(sentinel))
    for folder in (work, work / "out", work / "out" / "plugins"):
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("evil_plugin.py", "distill_plugins_evil.py", "sitecustomize.py", "usercustomize.py"):
            (folder / name).write_text(code)
    info = work / "evil-0.0.dist-info"  # an entry point that is not installed: not on any path
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[distill]\nevil = evil_plugin\n")
    # An installed plugin that the allowlist leaves out.
    site = Path(plugin_env["PYTHONPATH"].split(os.pathsep)[0])
    (site / "evil_installed.py").write_text(code)
    installed = site / "distill_evil_installed-0.0.dist-info"
    installed.mkdir(exist_ok=True)
    (installed / "METADATA").write_text("Metadata-Version: 2.1\nName: distill-evil-installed\nVersion: 0.0\n")
    (installed / "entry_points.txt").write_text("[distill]\nevil-installed = evil_installed\n")
    try:
        env = child_env(plugin_env)
        cli = [str(Path(sys.executable).parent / "distill")]  # as users run it: the console script
        if not Path(cli[0]).exists():
            cli = [sys.executable, "-c", "from distill.cli.app import main; main()"]
        r = subprocess.run(
            [*cli, "run", str(config), "--quiet"], cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stderr
        r = subprocess.run([*cli, "plugins", "--json"], cwd=work, env=env, capture_output=True, text=True)
        names = {p["entry_point"] for p in json.loads(r.stdout)["plugins"]}
        assert "evil" not in names and "evil-installed" not in names
        assert not sentinel.exists(), "plugin code was imported from a folder no entry point names"
        for ref in (
            "evil_plugin",
            "./evil_plugin.py",
            "evil_plugin:register",
            str(work / "evil_plugin.py"),
            "os:system",
        ):
            cfg = yaml.safe_load(config.read_text())
            cfg["output"] = "out-ref"
            cfg["teachers"]["writer"]["plugin"] = ref
            (work / "ref.yaml").write_text(yaml.safe_dump(cfg))
            r = subprocess.run(
                [*cli, "run", str(work / "ref.yaml"), "--quiet"], cwd=work, env=env, capture_output=True, text=True
            )
            assert r.returncode == 2 and "unknown teacher plugin" in r.stderr, r.stderr
        cfg = yaml.safe_load(config.read_text())
        cfg["plugins"] = {"paths": [str(work / "evil_plugin.py")]}
        (work / "ref.yaml").write_text(yaml.safe_dump(cfg))
        r = subprocess.run(
            [*cli, "run", str(work / "ref.yaml"), "--quiet"], cwd=work, env=env, capture_output=True, text=True
        )
        assert r.returncode == 2 and "plugins.paths: unknown key" in r.stderr, r.stderr
        assert not sentinel.exists()
        # Installed and not left out by DISTILL_PLUGINS: an entry point is how plugins load.
        r = subprocess.run(
            [*cli, "plugins", "--json"],
            cwd=work,
            env={**env, "DISTILL_PLUGINS": "evil-installed"},
            capture_output=True,
            text=True,
        )
        assert sentinel.exists(), r.stderr
    finally:
        shutil.rmtree(installed, ignore_errors=True)
        (site / "evil_installed.py").unlink(missing_ok=True)
    figures.add(plugin_load_attempts_refused=11)
