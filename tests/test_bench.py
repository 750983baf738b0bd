"""Output format of the benchmark harness and of `svdgrad bench` (never its timings)."""

from __future__ import annotations

import json
import math
import os

import pytest
import typer
from typer.testing import CliRunner

import svdgrad_cli.bench as harness
from svdgrad_cli.bench import (
    METHODS,
    parse_batch_shape,
    parse_batch_shapes,
    parse_cases,
    parse_shapes,
)
from svdgrad_cli.cli.bench import bench

JAX_METHODS = ("svd", "svdgrad-jvp", "svdgrad-vjp", "jax-jvp", "jax-vjp")
ROW_KEYS = {
    "shape",
    "case",
    "dtype",
    "method",
    "status",
    "note",
    "median_s",
    "min_s",
    "ratio_to_svd",
    "ratio_to_jax",
    "compile_s",
    "times_s",
}
TRANSFORM_ROW_KEYS = {
    "measure",
    "shape",
    "dtype",
    "variant",
    "method",
    "status",
    "note",
    "median_s",
    "min_s",
    "ratio_to_svd",
    "ratio_to_jax",
    "min_ratio_to_jax",
    "target",
    "within_target",
    "calls_per_sample",
    "compile_s",
    "times_s",
}


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(bench)

    @app.command()
    def other() -> None:  # a second command keeps `bench` a subcommand, as in the real app
        pass

    return app


runner = CliRunner()


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "out.json"
    args = ["bench", "--shapes", "8x6,6x8", "--repeat", "2", "--tangents", "2"]
    args += ["--tangents-shape", "8x6", "--cases", "thin-real-usv,full-real-usv"]
    args += ["--no-torch", "--json", str(path)]
    result = runner.invoke(_app(), args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output, json.loads(path.read_text())


def test_json_keys(cli_run):
    _, data = cli_run
    assert data["schema"] == "svdgrad-bench/1"
    assert {"schema", "config", "machine", "results", "many_tangents"} <= set(data)
    assert data["config"]["shapes"] == [[8, 6], [6, 8]]
    assert data["config"]["cases"] == ["thin-real-usv", "full-real-usv"]
    assert data["config"]["torch"] is False
    assert data["config"]["suite"] == "derivatives"
    assert data["transforms"] is None
    for key in ("jax_version", "device", "cpu_count"):
        assert data["machine"][key] is not None
    for row in data["results"]:
        assert set(row) == ROW_KEYS
        assert row["method"] in METHODS
        assert row["status"] in ("ok", "unsupported", "error")
    seen = {(tuple(r["shape"]), r["case"], r["method"]) for r in data["results"]}
    for shape in ((8, 6), (6, 8)):
        for case in ("thin-real-usv", "full-real-usv"):
            for method in JAX_METHODS:
                assert (shape, case, method) in seen


def test_ratios_positive_finite(cli_run):
    _, data = cli_run
    ok = [r for r in data["results"] if r["status"] == "ok"]
    assert ok
    for row in ok:
        assert _positive(row["median_s"]) and _positive(row["ratio_to_svd"])
        assert _positive(row["min_s"]) and row["min_s"] <= row["median_s"]
        assert _positive(row["compile_s"])
        assert len(row["times_s"]) == 2
        if row["method"] == "svd":
            assert row["ratio_to_svd"] == 1.0
    for row in data["results"]:
        if row["method"] in ("svdgrad-jvp", "svdgrad-vjp") and row["case"] == "thin-real-usv":
            assert _positive(row["ratio_to_jax"])
    many = data["many_tangents"]
    assert many["status"] == "ok", many["note"]
    assert many["tangents"] == 2 and many["shape"] == [8, 6]
    for key in ("batched_median_s", "separate_median_s", "ratio", "batched_per_tangent_s"):
        assert _positive(many[key])


def test_full_rectangular_autodiff_is_unsupported_not_a_crash(cli_run):
    _, data = cli_run
    for row in data["results"]:
        if row["case"] == "full-real-usv" and row["method"] in ("jax-jvp", "jax-vjp"):
            assert row["status"] == "unsupported"
            assert row["median_s"] is None and row["ratio_to_svd"] is None
            assert "NotImplementedError" in row["note"]
        if row["method"].startswith("svdgrad"):
            assert row["status"] == "ok"


def test_table_mentions_each_method(cli_run):
    output, _ = cli_run
    for method in JAX_METHODS:
        assert method in output
    for word in ("8x6", "6x8", "thin-real-usv", "Many tangents", "Compile", "unsupported", "jax"):
        assert word in output


def test_json_to_stdout():
    args = ["bench", "--shapes", "5x5", "--repeat", "1", "--tangents", "0", "--no-torch"]
    result = runner.invoke(_app(), [*args, "--json", "-"])
    assert result.exit_code == 0, result.output
    # the tables go to stderr, so stdout is the JSON document alone
    data = json.loads(result.stdout)
    assert data["many_tangents"] is None
    assert {r["method"] for r in data["results"]} == set(JAX_METHODS)


@pytest.mark.parametrize(
    "args",
    [
        ["--shapes", "8by6"],
        ["--shapes", "8x0"],
        ["--shapes", ""],
        ["--dtype", "float16"],
        ["--cases", "thin-real"],
        ["--device", "tpu"],
        ["--repeat", "0"],
        ["--tangents-shape", "8"],
        ["--suite", "grad"],
        ["--grad-shapes", "32"],
        ["--grad-shapes", "4x0x3"],
        ["--overhead-shape", "2x3x3"],
        ["--suite", "startup", "--startup-size", "0"],
    ],
)
def test_bad_options_exit_2(args):
    result = runner.invoke(_app(), ["bench", *args])
    assert result.exit_code == 2
    assert "Invalid value" in result.output


def test_parsers():
    assert parse_shapes("256x256, 20000X64") == [(256, 256), (20000, 64)]
    assert parse_batch_shapes("256x32x32,384x384") == [(256, 32, 32), (384, 384)]
    assert parse_batch_shape("2x3x4x5") == (2, 3, 4, 5)
    with pytest.raises(ValueError, match="MxN or BxMxN"):
        parse_batch_shape("384")
    assert parse_cases(None) == ["thin-real-usv"]
    assert parse_cases(None, "complex128") == ["thin-complex-usv"]
    assert len(parse_cases("all")) == 8
    with pytest.raises(ValueError, match="unknown case"):
        parse_cases("thin-real-usv,bogus")


def test_help_has_example_and_does_not_import_jax():
    import subprocess
    import sys

    code = (
        "import sys, typer; from typer.testing import CliRunner\n"
        "from svdgrad_cli.cli.bench import bench\n"
        "app = typer.Typer(); app.command()(bench); app.command('x')(lambda: None)\n"
        "r = CliRunner().invoke(app, ['bench', '--help'], env={'COLUMNS': '200'})\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'svdgrad bench --shapes 512x512 --repeat 3' in r.output, r.output\n"
        "assert 'svdgrad bench --suite startup --json startup.json' in r.output, r.output\n"
        "assert 'jax' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_calls_per_sample():
    assert harness._calls_per_sample(0.5, None) == 1
    assert harness._calls_per_sample(0.5, 0.02) == 1
    assert harness._calls_per_sample(0.001, 0.02) == 20
    assert harness._calls_per_sample(1e-9, 0.02) == harness.MAX_CALLS_PER_SAMPLE


def test_gpu_when_none_exits_2():
    import jax

    try:
        has_gpu = bool(jax.devices("gpu"))
    except RuntimeError:
        has_gpu = False
    if has_gpu:
        pytest.skip("a GPU is present")
    result = runner.invoke(_app(), ["bench", "--device", "gpu", "--shapes", "4x4"])
    assert result.exit_code == 2
    assert "--device gpu" in result.output


def test_float64_without_x64_is_an_error_not_float32():
    import jax

    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(RuntimeError, match="jax_enable_x64"):
            harness.run_benchmark([(4, 4)], repeat=1, tangents=0, use_torch=False)
        with pytest.raises(RuntimeError, match="jax_enable_x64"):
            harness.run_transforms([(4, 4)], (4, 4), repeat=1)
    finally:
        jax.config.update("jax_enable_x64", True)


# --------------------------------------------------------------------------------------------
# --suite transforms


@pytest.fixture(scope="module")
def transforms_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "transforms.json"
    args = ["bench", "--suite", "transforms", "--grad-shapes", "3x5x4,6x6"]
    args += ["--overhead-shape", "5x4", "--repeat", "2", "--json", str(path)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness, "SAMPLE_S", 0.002)  # short samples: the format is under test
        result = runner.invoke(_app(), args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output, json.loads(path.read_text())


def test_transforms_json(transforms_run):
    _, data = transforms_run
    assert data["config"]["suite"] == "transforms"
    assert data["config"]["grad_shapes"] == [[3, 5, 4], [6, 6]]
    assert data["config"]["overhead_shape"] == [5, 4]
    assert data["results"] == [] and data["many_tangents"] is None
    tr = data["transforms"]
    assert tr["targets"] == {"grad": 1.10, "overhead": 1.25}
    assert set(tr["losses"]) == {"usv", "s"}
    assert tr["dtype"] == "float64"
    keys = set()
    for row in tr["rows"]:
        assert set(row) == TRANSFORM_ROW_KEYS
        assert row["status"] == "ok", row["note"]
        assert row["dtype"] == "float64"
        keys.add((row["measure"], tuple(row["shape"]), row["variant"], row["method"]))
    expected = set()
    for shape in ((3, 5, 4), (6, 6)):
        expected.add(("grad", shape, None, "svd"))
        for loss in ("usv", "s"):
            expected |= {("grad", shape, loss, "svdgrad"), ("grad", shape, loss, "jax")}
    expected.add(("overhead", (5, 4), None, "svd"))
    for call in ("jvp", "vjp"):
        expected |= {("overhead", (5, 4), call, "svdgrad"), ("overhead", (5, 4), call, "jax")}
    assert keys == expected


def test_transforms_ratios_and_targets(transforms_run):
    _, data = transforms_run
    tr = data["transforms"]
    for row in tr["rows"]:
        assert _positive(row["median_s"]) and _positive(row["min_s"])
        assert row["min_s"] <= row["median_s"]
        assert _positive(row["ratio_to_svd"]) and _positive(row["compile_s"])
        assert len(row["times_s"]) == 2
        assert isinstance(row["calls_per_sample"], int) and row["calls_per_sample"] >= 1
        if row["method"] == "svdgrad":
            assert _positive(row["ratio_to_jax"]) and _positive(row["min_ratio_to_jax"])
            assert row["target"] == tr["targets"][row["measure"]]
            assert row["within_target"] is (row["ratio_to_jax"] <= row["target"])
        else:
            assert row["ratio_to_jax"] is None and row["min_ratio_to_jax"] is None
            assert row["target"] is None
            assert row["within_target"] is None
        if row["method"] == "svd":
            assert row["ratio_to_svd"] == 1.0


def test_transforms_tables(transforms_run):
    output, _ = transforms_run
    for word in ("jit(grad(loss))", "svd_jvp", "3x5x4", "usv", "vjp", "svd alone", "compile s"):
        assert word in output
    assert "Many tangents" not in output  # the derivatives suite did not run


def test_all_suites_in_a_fresh_process():
    """The real command in a process of its own (no test fixture has switched on x64): the three
    suites run, in float64."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "svdgrad_cli", "bench", "--suite", "all", "--shapes", "4x3"]
    args += ["--cases", "thin-real-usv", "--tangents", "0", "--no-torch", "--repeat", "1"]
    args += ["--grad-shapes", "2x3x3", "--overhead-shape", "3x3", "--startup-size", "8"]
    args += ["--json", "-"]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["config"]["suite"] == "all"
    assert {r["method"] for r in data["results"]} == set(JAX_METHODS)
    assert all(r["status"] == "ok" for r in data["results"])
    assert all(r["status"] == "ok" for r in data["transforms"]["rows"])
    assert data["startup"]["size"] == 8 and data["startup"]["repeat"] == 1
    assert all(len(c["times_s"]) == 1 for c in data["startup"]["commands"].values())


# --------------------------------------------------------------------------------------------
# --suite startup

STARTUP_COMMANDS = {
    "help": "--help",
    "import-typer-rich": "import typer, rich",
    "jvp-small": "jvp A64.npy dA64.npy -o out64.npz",
    "import-jax": "import jax.numpy",
    "jvp-large": "jvp A32.npy dA32.npy -o out32.npz",
    "script-large": "plain_jvp.py A32.npy dA32.npy plain32.npz",
}


def test_startup_suite(tmp_path):
    """Whole processes: the JSON's structure, and ratios that are those of the medians (never
    the timings themselves)."""
    path = tmp_path / "startup.json"
    args = ["bench", "--suite", "startup", "--startup-size", "32", "--repeat", "2"]
    result = runner.invoke(_app(), [*args, "--json", str(path)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    data = json.loads(path.read_text())
    assert data["config"]["suite"] == "startup"
    assert data["config"]["startup_size"] == 32 and data["config"]["startup_repeat"] == 2
    assert data["results"] == [] and data["transforms"] is None
    for key in ("jax_version", "python_version", "cpu_count", "processor"):
        assert data["machine"][key] is not None
    st = data["startup"]
    assert st["size"] == 32 and st["small_size"] == 64 and st["dtype"] == "float64"
    assert st["repeat"] == 2 and st["warmup_rounds"] == 1
    assert st["cache_dir"] is None  # the private one
    assert "jax.jvp" in st["script"] and "np.savez" in st["script"]
    assert st["svdgrad"][-1].endswith("svdgrad") or st["svdgrad"][-2:] == ["-m", "svdgrad_cli"]
    if hasattr(os, "getloadavg"):
        for key in ("load_average_before", "load_average_after"):
            assert len(st[key]) == 3
        assert len(data["machine"]["load_average"]) == 3
    assert set(st["commands"]) == set(STARTUP_COMMANDS)
    for name, cmd in st["commands"].items():
        assert set(cmd) == {"argv", "command", "about", "warmup_s", "times_s", "median_s", "min_s"}
        assert STARTUP_COMMANDS[name] in cmd["command"]
        assert cmd["argv"] and all(isinstance(a, str) for a in cmd["argv"])
        assert len(cmd["times_s"]) == 2 and all(_positive(t) for t in cmd["times_s"])
        assert _positive(cmd["warmup_s"]) and _positive(cmd["median_s"])
        assert cmd["min_s"] <= cmd["median_s"]
    pairs = {(c["command"], c["baseline"]) for c in st["comparisons"]}
    assert pairs == {
        ("help", "import-typer-rich"),
        ("jvp-small", "import-jax"),
        ("jvp-large", "script-large"),
    }
    goals = {c["name"]: c["goal"] for c in st["comparisons"]}
    assert goals == {"help": 1.5, "jvp-small": 1.3, "jvp-large": 1.0}
    for comp in st["comparisons"]:
        ratio = st["commands"][comp["command"]]["median_s"]
        ratio /= st["commands"][comp["baseline"]]["median_s"]
        assert _positive(comp["ratio"]) and comp["ratio"] == ratio
        assert comp["within_goal"] is (comp["ratio"] <= comp["goal"])
    for word in ("Startup", "svdgrad --help", "import jax.numpy", "plain JAX script", "goal"):
        assert word in result.output
    table = result.output[: result.output.index("float64. jvp:")]
    assert max(len(line) for line in table.splitlines()) <= 80
