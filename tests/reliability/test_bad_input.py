"""Bad input: configs and seed files built by hypothesis (random bytes, wrong encodings, huge
lines, deep nesting, YAML alias bombs, wrong types). distill never crashes with a traceback:
the config loader raises only ConfigError, naming the key or line; the seed loader rejects
each bad row with a reason naming its line, and keeps every good row. A few cases go through
the real CLI to check the exit code and that no traceback reaches the user.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from distill.config.loader import load_config, parse_config, validate_plugin_options
from distill.errors import ConfigError, DistillError, SeedError
from distill.io.seeds import SeedSource, load_seeds
from distill.io.store import StageStore
from distill.registry import make_registry

from . import reliability_plugins
from .harness import child_env, distill, write_seeds

SETTINGS = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad-input")


@pytest.fixture(scope="module")
def registry():
    return make_registry(extra=[("reliability", reliability_plugins)])


def _valid_config(folder: Path) -> dict[str, Any]:
    seeds = write_seeds(folder)
    return {
        "output": "out",
        "seed": 3,
        "cache": {"enabled": False},
        "seeds": [{"path": seeds.name, "license": "CC0-1.0", "name": "acme"}],
        "teachers": {"writer": {"plugin": "counting-echo", "options": {"n": 2}}},
        "stages": [
            {
                "kind": "generate",
                "name": "answers",
                "teacher": "writer",
                "batch_size": 4,
                "task": {"plugin": "response", "options": {"system_prompt": "Be brief."}},
            },
            {
                "kind": "filter",
                "name": "clean",
                "filters": [{"plugin": "length", "options": {"min_words": 2}}, "exact-dedup"],
            },
            {"kind": "export", "name": "sft", "format": "sft"},
        ],
    }


def _load_checked(path: Path, registry) -> str | None:
    """Load and validate a config the way `distill run` does; return the error message, if any.
    Anything but a ConfigError is a crash, and fails the test."""
    try:
        loaded = load_config(path)
        validate_plugin_options(loaded, registry)
    except ConfigError as exc:
        message = str(exc)
        assert message.strip() and "Traceback" not in message
        return message
    return None


# -- configs ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@SETTINGS
@given(data=st.binary(max_size=3000))
def test_any_bytes_as_a_config_file_give_a_message_not_a_crash(data, scratch, registry, figures):
    figures.add(bad_inputs=1)
    path = scratch / "bytes.yaml"
    path.write_bytes(data)
    _load_checked(path, registry)


@SETTINGS
@given(text=st.text(max_size=2000), encoding=st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1", "cp1252"]))
def test_any_text_in_any_encoding_gives_a_message_not_a_crash(text, encoding, scratch, registry, figures):
    figures.add(bad_inputs=1)
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        assume(False)
    path = scratch / "text.yaml"
    path.write_bytes(data)
    _load_checked(path, registry)


@SETTINGS
@given(
    doc=st.dictionaries(
        st.sampled_from(
            [
                "output",
                "seed",
                "seeds",
                "teachers",
                "stages",
                "cache",
                "plugins",
                "licenses",
                "models",
                "release",
                "version",
                "extra",
            ]
        ),
        json_values,
        max_size=6,
    )
)
def test_any_yaml_mapping_of_config_keys_gives_a_message_not_a_crash(doc, scratch, registry, figures):
    figures.add(bad_inputs=1)
    path = scratch / "doc.yaml"
    path.write_text(yaml.safe_dump(doc))
    _load_checked(path, registry)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _render(path: tuple) -> str:
    text = ""
    for p in path:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


@SETTINGS
@given(data=st.data())
def test_a_valid_config_with_one_value_of_the_wrong_type_names_where(data, scratch, registry, figures):
    figures.add(bad_inputs=1)
    cfg = _valid_config(scratch)
    path = data.draw(st.sampled_from(_paths(cfg)), label="path")
    value = data.draw(json_values | st.sampled_from([-1, 0, 10**30, "", "../../etc", [], {}]), label="value")
    node = cfg
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    file = scratch / "mutated.yaml"
    file.write_text(yaml.safe_dump(cfg))
    message = _load_checked(file, registry)
    if message is not None:
        # The message names the place: the changed key's path, or its stage / teacher / seed source.
        named = [_render(path[:k]) for k in range(min(len(path), 2), len(path) + 1)]
        assert any(n in message for n in named) or ("stage name" in message and "name" in path), (path, message)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("output: " + "[" * 20000 + "]" * 20000, "nested more than 64 levels"),
        ("output: " + "{a: " * 100 + "1" + "}" * 100, "nested more than 64 levels"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
            "expands to more than",
        ),
        ("output: &o [*o]\n", "refers to itself"),
        ("seed: " + "9" * 5000, "invalid YAML"),
        ('output: "out\\0evil"\nseeds: []\nstages: []\n', "NUL"),
        ("output: !!python/object/apply:os.system ['echo pwned']\n", "could not determine a constructor"),
        ("- just\n- a list\n", "must be a mapping"),
        ("", "must be a mapping"),
    ],
)
def test_hostile_yaml_is_refused_quickly_with_a_message(scratch, registry, text, expected, figures):
    figures.add(bad_inputs=1)
    path = scratch / "hostile.yaml"
    path.write_text(text)
    started = time.monotonic()
    message = _load_checked(path, registry)
    assert message is not None and expected in message, message
    assert time.monotonic() - started < 5


# -- seed files ------------------------------------------------------------------------------

prompts = st.text(min_size=1, max_size=200).filter(lambda s: s.strip())


@st.composite
def seed_lines(draw) -> tuple[bytes, bool]:
    """One line of a JSONL seed file and whether it is a good row."""
    kind = draw(
        st.sampled_from(
            [
                "good",
                "good-huge",
                "good-extra",
                "bytes",
                "latin-1",
                "utf-16",
                "deep",
                "huge-number",
                "not-object",
                "wrong-type",
                "empty-prompt",
                "surrogate",
                "truncated",
                "bad-messages",
            ]
        )
    )
    prompt = draw(prompts)
    if kind == "good":
        return json.dumps({"prompt": prompt}).encode(), True
    if kind == "good-huge":  # a line of a megabyte or so
        return json.dumps({"prompt": prompt * draw(st.integers(1000, 5000))}).encode(), True
    if kind == "good-extra":
        return json.dumps(
            {"question": prompt, "answer": draw(prompts), "meta": draw(json_values)}, ensure_ascii=draw(st.booleans())
        ).encode(), True
    if kind == "bytes":
        data = draw(st.binary(min_size=1, max_size=200)).replace(b"\n", b" ")
        if not data.strip() or data.startswith(b"\xef\xbb\xbf"):
            data = b"#" + data
        return data, _is_good(data)  # random bytes are a good row only by (astronomical) luck
    if kind == "latin-1":
        return ('{"prompt": ' + json.dumps("caf\u00e9 " + prompt, ensure_ascii=False) + "}").encode(
            "latin-1", "replace"
        ), False
    if kind == "utf-16":
        return json.dumps({"prompt": prompt}).encode("utf-16-le").replace(b"\n", b" "), False
    if kind == "deep":
        depth = draw(st.integers(2000, 100_000))
        return ("[" * depth + "]" * depth).encode(), False
    if kind == "huge-number":
        return ('{"prompt": "x", "n": ' + "7" * draw(st.integers(5000, 20000)) + "}").encode(), False
    if kind == "not-object":
        return json.dumps(
            draw(st.one_of(st.lists(json_values, max_size=3), st.text(), st.integers(), st.none()))
        ).encode(), False
    if kind == "wrong-type":
        return json.dumps(
            {
                "prompt": draw(
                    st.one_of(
                        st.integers(),
                        st.lists(st.integers(), min_size=1),
                        st.dictionaries(st.text(), st.integers(), min_size=1),
                        st.booleans(),
                    )
                )
            }
        ).encode(), False
    if kind == "empty-prompt":
        return json.dumps({"prompt": draw(st.sampled_from(["", "   ", "\t"]))}).encode(), False
    if kind == "surrogate":  # an escape for half of a surrogate pair: JSON allows it, UTF-8 cannot hold it
        return (json.dumps({"prompt": prompt})[:-2] + ' \\ud83d"}').encode(), False
    if kind == "truncated":
        text = json.dumps({"prompt": prompt})
        return text[: draw(st.integers(1, len(text) - 1))].encode(), False
    return json.dumps({"messages": [{"role": "wizard", "content": prompt}]}).encode(), False


def _is_good(data: bytes) -> bool:
    """Whether a random line is, by luck, a good row (an object with a usable prompt field)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(value, dict):
        return False
    for k in ("messages", "prompt", "instruction", "question", "input"):
        if value.get(k) is not None:
            return isinstance(value[k], str) and bool(value[k].strip())
    return False


@SETTINGS
@given(lines=st.lists(seed_lines(), min_size=1, max_size=12))
def test_a_seed_file_of_good_and_bad_lines_keeps_every_good_row_and_names_each_bad_line(lines, scratch, figures):
    path = scratch / "seeds.jsonl"
    path.write_bytes(b"\n".join(data for data, _ in lines) + b"\n")
    figures.add(bad_inputs=sum(not good for _, good in lines), seed_lines_checked=len(lines))
    loaded = load_seeds(SeedSource(path=path, license="CC0-1.0"))
    good = [n for n, (_, ok) in enumerate(lines, 1) if ok]
    bad = [n for n, (_, ok) in enumerate(lines, 1) if not ok]
    assert [r.metadata["seed_row"] for r in loaded.records] == good
    reasons = [r.provenance.events[-1].reason for r in loaded.rejected]
    assert [int(reason.split(":")[0].removeprefix("line ")) for reason in reasons] == bad, reasons
    assert all(len(reason) < 300 for reason in reasons)
    # Everything loaded can be committed and read back.
    store = StageStore(scratch / "store", "seeds", "seeds", f"h{time.monotonic_ns()}")
    store.commit(loaded.records, loaded.rejected, inputs=len(lines))
    assert len(list(store.kept())) == len(good) and len(list(store.rejected())) == len(bad)


@SETTINGS
@given(data=st.binary(max_size=4000), suffix=st.sampled_from([".jsonl", ".csv"]))
def test_random_bytes_as_a_seed_file_never_crash(data, suffix, scratch, figures):
    figures.add(bad_inputs=1)
    path = scratch / f"random{suffix}"
    path.write_bytes(data)
    try:
        loaded = load_seeds(SeedSource(path=path, license="CC0-1.0"))
    except SeedError as exc:  # only for a whole file that cannot be read (a CSV header it cannot use)
        assert suffix == ".csv" and str(exc).strip()
        return
    rows = loaded.records + loaded.rejected
    if suffix == ".jsonl":
        assert len(rows) == sum(1 for line in data.split(b"\n") if line.strip() and line.strip() != b"\xef\xbb\xbf")
    store = StageStore(scratch / "store-random", "seeds", "seeds", f"h{time.monotonic_ns()}")
    store.commit(loaded.records, loaded.rejected, inputs=len(rows))


# -- through the CLI -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,content,key",
    [
        ("binary", b"\x00\x9f\x92\x96 \xff\xfe garbage", "cannot read config"),
        ("utf16", "output: out\n".encode("utf-16"), "cannot read config"),
        (
            "bomb",
            (
                "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
            ).encode(),
            "expands to more than",
        ),
        ("deep", ("output: " + "[" * 50000 + "]" * 50000).encode(), "nested more than"),
        (
            "wrong-types",
            yaml.safe_dump(
                {
                    "output": 5,
                    "seed": "many",
                    "seeds": {"path": 1},
                    "stages": [{"kind": "generate", "batch_size": "big"}],
                }
            ).encode(),
            "seed:",
        ),
        (
            "markup",
            yaml.safe_dump(
                {
                    "output": "out",
                    "seed": "[/] [bold]x[/bold]",
                    "seeds": [{"path": "[/].jsonl"}],
                    "stages": [{"kind": "export"}],
                }
            ).encode(),
            "(got '[/] [bold]x[/bold]')",
        ),
    ],
)
def test_the_cli_names_the_problem_and_exits_2_without_a_traceback(tmp_path, plugin_env, name, content, key, figures):
    figures.add(bad_inputs=1)
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    started = time.monotonic()
    r = distill("run", str(path), "--quiet", env=child_env(plugin_env))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.startswith("error:") and key in r.stderr, r.stderr
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_a_run_on_a_hostile_seed_file_keeps_the_good_rows_and_names_every_bad_line(tmp_path, plugin_env, figures):
    cfg = _valid_config(tmp_path)
    bad = [
        b"\xff\xfe not utf-8",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"prompt": "x", "n": ' + b"9" * 9000 + b"}",
        b'{"prompt": "half a pair \\udc00"}',
        b'{"prompt": 42}',
        b'"a string"',
        b'{"prompt": "unterminated',
        '{"prompt": "caf\u00e9"}'.encode("latin-1"),
        json.dumps({"prompt": "x" * 2_000_000}).encode()[:-2],
    ]
    good = [json.dumps({"prompt": f"Good question number {i} about routers?"}).encode() for i in range(6)]
    good.append(json.dumps({"prompt": "A long one: " + "word " * 200_000}).encode())  # ~1 MB line
    lines = [x for pair in zip(good, bad) for x in pair] + bad[len(good) :] + good[len(bad) :]
    (tmp_path / "seeds.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = child_env(plugin_env)
    r = distill("run", str(config), "--quiet", env=env)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    r = distill("inspect", str(tmp_path / "out"), "--json", env=env)
    stages = {s["stage"]: s for s in json.loads(r.stdout)}
    assert stages["seeds"]["totals"] == {"in": len(lines), "generated": 0, "kept": len(good), "rejected": len(bad)}
    assert sum(stages["seeds"]["reasons"].values()) == len(bad)
    assert stages["answers"]["totals"]["in"] == len(good)
    assert all(s["balanced"] and s["complete"] for s in stages.values())
    from distill.io.store import read_shards

    rejected = list(read_shards(tmp_path / "out" / "stages" / "seeds", ["rejected-00000.jsonl"]))
    numbers = sorted(int(x.provenance.events[-1].reason.split(":")[0].removeprefix("line ")) for x in rejected)
    assert numbers == sorted(n for n, line in enumerate(lines, 1) if line in bad)
    figures.add(
        bad_inputs=len(bad), records_checked=sum(s["totals"]["kept"] + s["totals"]["rejected"] for s in stages.values())
    )


@pytest.mark.slow
def test_a_seed_file_with_no_good_row_runs_to_an_empty_export_with_a_warning(tmp_path, plugin_env, figures):
    cfg = _valid_config(tmp_path)
    (tmp_path / "seeds.jsonl").write_bytes(b"\xff\n[1, 2]\n{oops\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    r = distill("run", str(config), "--quiet", env=child_env(plugin_env))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "all 3 rows were rejected" in " ".join(r.stderr.split())
    figures.add(bad_inputs=3)


def test_config_problems_are_distill_errors(scratch):
    """The bad-input guarantee in one line: what a user can get wrong is a DistillError."""
    with pytest.raises(DistillError):
        parse_config({"output": "x", "seeds": [], "stages": []})


@pytest.mark.slow
def test_brackets_in_names_and_paths_are_printed_not_parsed_as_markup(tmp_path, plugin_env, figures):
    """The terminal output uses rich markup; user text ("[/]", "[bold]") in a path, a release
    name or a drop reason must be printed as it is, not crash the printer."""
    cfg = _valid_config(tmp_path)
    cfg["output"] = "out [/] [bold]x"
    cfg["seeds"][0]["name"] = "seeds [/]"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = child_env(plugin_env)
    out = tmp_path / cfg["output"]
    for args in (
        ["run", str(config)],
        ["inspect", str(out)],
        ["audit", str(out), "--use", "research", "--name", "rel [/] [red]"],
        ["cache", "stats", "--cache", str(tmp_path / "[/] none.sqlite")],
        ["schema", "[/]"],
    ):
        r = distill(*args, env=env)
        figures.add(bad_inputs=1)
        assert "Traceback" not in r.stdout + r.stderr and "MarkupError" not in r.stderr, (args, r.stderr)
        assert r.returncode in ((0,) if args[0] in ("run", "inspect") else (0, 1, 2)), (args, r.stderr)
        if args[0] == "audit":
            assert "rel [/] [red]" in " ".join(r.stdout.split()), r.stdout
