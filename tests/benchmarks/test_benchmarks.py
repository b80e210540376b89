"""The benchmark suites: import safety, report rendering, and a QUICK=1 run of every suite."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest

from benchmarks import blocks, rates, readme, report, runner
from benchmarks.config import BenchConfig
from tests.conftest import REPO

LIGHT = (
    "benchmarks",
    "benchmarks.__main__",
    "benchmarks.runner",
    "benchmarks.report",
    "benchmarks.figures",
    "benchmarks.measure",
    "benchmarks.config",
    "benchmarks.machine",
    "benchmarks.rates",
    "benchmarks.data",
    "benchmarks.dali_loader",
)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=REPO, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")


def test_cli_modules_import_without_tensorflow_or_work(tmp_path):
    code = (
        "import sys, os; "
        + "; ".join(f"import {m}" for m in LIGHT)
        + "; assert 'tensorflow' not in sys.modules, 'tensorflow imported'; print(os.listdir('.'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # nothing written at import


def test_every_suite_module_imports_without_running(tmp_path):
    mods = [
        "benchmarks.ceilings",
        "benchmarks.ablation",
        "benchmarks.loaders",
        "benchmarks.artificial",
        "benchmarks.images",
        "benchmarks.torch_loader",
    ]
    code = "import os; " + "; ".join(f"import {m}" for m in mods) + "; print(os.listdir('.'))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=90
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_config_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="crop=300"):
        BenchConfig(crop=300)
    with pytest.raises(ValueError, match="reps=0"):
        BenchConfig(reps=0)
    assert BenchConfig.full().reps >= 5
    assert BenchConfig.smoke().quick


def test_suites_run_side_by_side_only_in_smoke_runs(capsys):
    """``--jobs`` (suites at the same time) saves time in a smoke run; measured figures need one at a time."""
    from benchmarks.__main__ import parse

    assert parse(["--quick", "--jobs", "2"]).jobs == 2 and parse([]).jobs == 1
    with pytest.raises(SystemExit):
        parse(["--jobs", "2"])
    assert "--jobs 2 is for --quick runs only" in capsys.readouterr().err


def test_target_met_is_a_ratio_comparison():
    assert runner.Target("x", 1.2, 1.25).met
    assert not runner.Target("x", 1.2, 1.19).as_dict()["met"]
    # a miss (or a meet) by less than the A/A spread is said to be within noise
    assert runner.Target("x", 1.0, 0.97, noise=0.05).as_dict()["within_noise"]
    assert not runner.Target("x", 1.0, 0.90, noise=0.05).within_noise


def test_every_row_gets_the_same_warm_up_and_work():
    """One iterator per row and pass; each row reads the same elements before and inside its windows."""
    cfg = BenchConfig.smoke(warmup=1, reps=4, window_batches=3)
    pulled: list[int] = []

    def factory(batch: int):
        def make():
            pulled.append(0)

            def gen():
                while True:
                    pulled[-1] += 1
                    yield batch

            return gen()

        return lambda: (make, lambda b: b)

    # batch sizes differ: a row of small batches must read more batches for the same examples
    got = rates.one_by_one([factory(8), factory(32)], cfg, warm_examples=100)
    small, big = pulled[0], pulled[1]
    # first + ceil(100 / batch) epoch batches + (1 + warmup 3 + 3 timed) + (1 + 3 timed)
    assert small == 1 + 13 + 7 + 4 and big == 1 + 4 + 7 + 4, pulled
    assert pulled == [small, big, big, small]  # forward, then reverse; every pass warms up again
    assert all(m.warm_examples == 100 and m.windows.reps == 4 for m in got)
    assert got[0].windows.items_per_rep == 3 * 8 and got[1].windows.items_per_rep == 3 * 32
    # four passes (the auto suite): forward, reverse, forward, reverse, one timed window each
    pulled.clear()
    got = rates.one_by_one([factory(8), factory(32)], cfg, warm_examples=100, passes=4)
    assert pulled == [1 + 13 + 7, 1 + 4 + 7, 1 + 4 + 7, 1 + 13 + 7] * 2, pulled
    assert all(m.windows.reps == 4 for m in got)


def test_timed_window_is_seconds_of_the_reference_after_its_epoch():
    """About ``seconds`` of elements at the reference's measured rate, read after one warm epoch, clamped."""
    pulled: list[int] = []

    def make():
        def gen():
            while True:
                pulled.append(1)
                time.sleep(0.01)  # about 100 elements/s, 10 examples each
                yield 10

        return gen()

    entry = (make, lambda b: b)
    got = rates.timed_window(entry, warm_examples=50, least=1, most=1000, seconds=0.5)
    assert 25 <= got <= 55, got  # 0.5 s at <= 100 elements/s (sleep overshoots, never undershoots)
    assert 5 + 60 <= len(pulled) <= 5 + 110, len(pulled)  # the epoch (5 elements), then one second
    assert rates.timed_window(entry, warm_examples=50, least=80, most=1000, seconds=0.5) == 80
    assert rates.timed_window(entry, warm_examples=50, least=1, most=7, seconds=0.5) == 7


def test_spread_and_differs():
    assert rates.spread(100, 110) == round(10 / 105, 3)
    assert not rates.differs(1.04, 1.0, 0.05) and rates.differs(1.06, 1.0, 0.05)


def _fake_result() -> dict:
    rows = [
        {
            "group": "image",
            "name": "naive",
            "unit": "examples/s",
            "first_s": 0.5,
            "median": 100.0,
            "low": 90.0,
            "high": 110.0,
            "reps": 5,
            "items_per_rep": 640,
            "x_naive": 1.0,
            "of_bound": 0.1,
        },
        {
            "group": "artificial",
            "name": "naive",
            "unit": "calls/s",
            "first_s": 0.3,
            "median": 4.0,
            "low": 3.0,
            "high": 5.0,
            "reps": 5,
            "items_per_rep": 1,
            "seconds": 0.25,
            "seconds_low": 0.2,
            "seconds_high": 0.333,
        },
    ]
    load = {"before": [1, 1, 1], "after": [2, 2, 2]}
    machine = {
        "cpu_model": "cpu",
        "cores": 2,
        "memory_gb": 8,
        "load_average": load,
        "packages": {"tensorflow": "2.16.2"},
        "time_utc": "now",
    }
    return {
        "suite": "ablation",
        "rows": rows,
        "targets": [runner.Target("t", 0.8, 0.1, "d").as_dict()],
        "notes": ["n"],
        "noise": {"image": 0.05},
        "machine": machine,
        "seconds": 12.0,
    }


def test_readme_tables_are_regenerated_between_markers(tmp_path):
    readme_md = tmp_path / "README.md"
    readme_md.write_text(f"prose before\n{blocks.begin('tables')}\nold\n{blocks.end('tables')}\nprose after\n")
    report.update_readme(readme_md, [_fake_result()])
    text = readme_md.read_text()
    assert text.startswith("prose before") and text.endswith("prose after\n") and "old" not in text
    assert "| naive | 100 (90-110) | 1.00 | 10% | 0.50 |" in text  # the base row (exactly 1) is not marked
    assert "0.250 s (0.200-0.333)" in text and "**no**" in text
    (tmp_path / "plain.md").write_text("no markers here\n")
    with pytest.raises(ValueError, match="markers"):
        report.update_readme(tmp_path / "plain.md", [])


def test_ratios_inside_the_noise_are_marked_and_bounds_above_one_are_not_limits():
    rows = [
        dict(_fake_result()["rows"][0], name="a", x_naive=1.04, of_bound=0.5),
        dict(_fake_result()["rows"][0], name="b", x_naive=1.2, of_bound=1.05),
    ]
    table = report.group_table(rows, noise=0.05)
    assert "| 1.04 ~ |" in table and "| 1.20 |" in table
    assert "105% (above the bound: not a limit)" in table and "| 50% |" in table


def test_committed_readmes_match_the_committed_results():
    """Every generated block of README.md, docs/ and benchmarks/README.md is what the committed JSON renders."""
    stale = readme.render_all(check=True)
    assert not stale, f"stale blocks (run `python -m benchmarks.readme`): {stale}"


def _copy_readmes_and_results(tmp_path):
    """The registered READMEs and every committed result file, copied under ``tmp_path``."""
    readme._load()  # registers every renderer (README.md's figures too)
    results = [str(p.relative_to(readme.REPO)) for p in (readme.REPO / "benchmarks/results").glob("*.json")]
    for rel in {path for path, _ in readme.RENDERERS} | set(results):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((readme.REPO / rel).read_text())
    assert readme.render_all(tmp_path, check=True) == []


def test_a_changed_result_makes_its_block_stale(tmp_path):
    _copy_readmes_and_results(tmp_path)
    path = tmp_path / "benchmarks/results/loaders.json"
    result = json.loads(path.read_text())
    result["targets"][0]["measured"] += 0.5
    path.write_text(json.dumps(result))
    stale = readme.render_all(tmp_path, check=True)
    assert "benchmarks/README.md: targets" in stale and "docs/benchmarks.md: bench-summary" in stale, stale


def _bump(r: dict, *keys) -> None:
    """Change the number at ``r[k1][k2]...`` (a list index where the key is an int)."""
    for k in keys[:-1]:
        r = r[k]
    r[keys[-1]] = r[keys[-1]] * 0.5 + 1


@pytest.mark.parametrize(
    "family, keys, block",
    [
        ("training", ("default", "final_eval_accuracy"), "training-figures"),
        ("training", ("prepare", "seconds"), "setup-figures"),
        ("backends", ("vs_one_device", "mirrored", "max_weight_diff"), "backend-differences"),
        ("profile", ("naive", "report", "diagnosis", "input_fraction"), "profile-example"),
        ("profile", ("naive", "report", "measurements", "compute_s"), "profile-naive-report"),
        ("service", ("restart", "runs", 0, "lost_examples"), "service-restart"),
        ("service", ("restart", "runs_at_most_once", 0, "lost_files"), "service-restart"),
        ("service", ("compare", "runs", 0, "exactly_once_examples_per_s"), "service-ratio"),
        ("service", ("compare", "runs", 0, "local_examples_per_s"), "service-ratio"),
    ],
)
def test_a_changed_figure_file_makes_its_readme_block_stale(tmp_path, family, keys, block):
    """README.md's measured figures (``python -m benchmarks.measure``) are rendered from their files."""
    _copy_readmes_and_results(tmp_path)
    path = tmp_path / f"benchmarks/results/{family}.json"
    result = json.loads(path.read_text())
    _bump(result, *keys)
    path.write_text(json.dumps(result))
    assert any(s.endswith(f".md: {block}") for s in readme.render_all(tmp_path, check=True))


def test_the_command_line_check_fails_on_a_stale_block(tmp_path):
    """``python -m benchmarks.readme --check`` (run as __main__) sees every renderer and exits 1."""
    _copy_readmes_and_results(tmp_path)
    path = tmp_path / "benchmarks/results/service.json"
    result = json.loads(path.read_text())
    result["compare"]["runs"] = result["compare"]["runs"][:1]
    path.write_text(json.dumps(result))
    cmd = [sys.executable, "-m", "benchmarks.readme", "--check", "--root", str(tmp_path)]
    out = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "docs/scale-out.md: service-ratio" in out.stderr, out.stderr[-2000:]


def test_torch_crop_params_stay_inside_the_image():
    pytest.importorskip("torch")
    from benchmarks.torch_loader import crop_params

    rng = random.Random(0)
    for _ in range(500):
        left, top, w, h = crop_params(256, 200, rng)
        assert left >= 0 and top >= 0 and left + w <= 256 and top + h <= 200 and w > 0 and h > 0


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_quick_run_of_every_suite(tmp_path):
    """``make bench QUICK=1`` in small: every suite in its own process, JSON and README written.

    Two suites at a time (``--jobs 2``): a smoke run checks code paths, not figures, and the
    suites' start-up (imports, graph building) is mostly one core's work.
    """
    readme_md = tmp_path / "README.md"
    readme_md.write_text(f"# bench\n{blocks.begin('tables')}\n{blocks.end('tables')}\n")
    cmd = [
        sys.executable,
        "-m",
        "benchmarks",
        "--quick",
        "--data-dir",
        str(tmp_path / "data"),
        "--results-dir",
        str(tmp_path / "results"),
        "--readme",
        str(readme_md),
        "--timeout",
        "240",
        "--jobs",
        "2",
    ]
    out = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = [out.stdout.find(f"### {suite}\n") for suite in runner.SUITES]
    assert -1 not in printed and printed == sorted(printed), "tables missing or not in suite order"
    for suite in runner.SUITES:
        result = json.loads((tmp_path / "results" / f"{suite}.json").read_text())
        rated = [r for r in result["rows"] if "median" in r]  # rates; other rows hold sizes or quality figures
        assert rated, suite
        assert all(r["reps"] == 2 and r["median"] > 0 for r in rated)
        assert {"cpu_model", "cores", "memory_gb", "packages", "load_average"} <= set(result["machine"])
        assert f"### {suite}" in out.stdout and f"### {suite}" in readme_md.read_text()
        groups = {r["group"] for r in rated} - {"parse", "read"}  # one row each: nothing to pair
        assert groups <= set(result["noise"]), f"{suite}: groups without an A/A spread"
        assert all(any("A/A repeat" in r["name"] for r in result["rows"] if r["group"] == g) for g in groups)
        paired = [r for r in result["rows"] if "warm_examples" in r]
        for g in {r["group"] for r in paired}:  # the same warm-up and the same work for every row of a group
            same = {(r["warm_examples"], r["items_per_rep"]) for r in paired if r["group"] == g}
            assert len(same) == 1, (suite, g, same)
    loaders = json.loads((tmp_path / "results" / "loaders.json").read_text())
    described = {json.dumps(r["batch"], sort_keys=True) for r in loaders["rows"]}
    for text in described:
        batch = json.loads(text)
        assert batch["image"]["shape"] == [16, 224, 224, 3] and batch["image"]["dtype"] == "float32", batch
        assert batch["label"]["shape"] == [16] and batch["label"]["dtype"] == "int64", batch
        assert batch["image"]["type"].split(".")[0] in ("tensorflow", "torch"), batch  # framework tensors
    from benchmarks import targets as goals

    targets = {
        t["name"]
        for r in sorted({g.suite for g in goals.GOALS})
        for t in json.loads((tmp_path / "results" / f"{r}.json").read_text())["targets"]
    }
    assert targets == {g.name for g in goals.GOALS}, targets  # every goal's suite wrote exactly its goals
