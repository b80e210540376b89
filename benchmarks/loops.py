"""Steps per compiled call: ``train.steps_per_loop`` against one step per Python iteration.

Rows of one suite, each the training step of ``make train`` on one device (the run assembly of
``training.assembly``: its pipeline, model, optimizer and trainer), measured as training
examples/s:

- ``clicks``: the table MLP (``clicks_mlp``) on ``clicks`` (a small model: the host round trip
  per step is a large part of each step);
- ``synthetic``: the default CNN (``shapes_cnn``) on 64 px in-memory images (compute dominates).

The input is the run's first 64 batches held in memory and repeated, so input costs the same
(about nothing) in every row and a row times the step and its host round trip. Each row's
element is ``STEPS`` training steps: ``STEPS`` calls of ``Trainer.train_step`` (each
waits for its loss, as the controller does), or ``STEPS / n`` calls of ``Trainer.train_loop``
with ``n`` steps each; so every row does the same work per element and gets the same warm-up.
"""

from __future__ import annotations

from benchmarks import data, rates
from benchmarks.config import BenchConfig
from benchmarks.runner import SuiteResult, Target, row

STEPS = 20  # training steps per timed element, every row
CACHED = 64  # batches of the run's pipeline kept in memory and repeated
LOOP = 10  # train.steps_per_loop of the looped row
AA = " (A/A repeat)"
ONE = "1 step per call"
LOOPED = f"steps_per_loop={LOOP}"
VARIANTS = ((ONE, 1), (LOOPED, LOOP), (ONE + AA, 1))
GROUPS = {"clicks": "loop clicks", "synthetic": "loop synthetic"}


def _config(cfg: BenchConfig, name: str):
    from ingest.runconfig import from_args

    sets = [f"data.data_dir={cfg.data_dir} train.prepare_missing=false train.eval_every_epoch=false"]
    rows = cfg.clicks_rows if name == "clicks" else min(4096, cfg.image_examples)
    sets.append(f"data.train_examples={rows}" + (" data.image_size=64" if name == "synthetic" else ""))
    return from_args([f"DATASET={name}", "STRATEGY=one_device", f"BATCH={cfg.batch}"], sets)


def _entry(config, backend, steps_per_loop: int) -> rates.Entry:
    from training import assembly

    def make_iter():
        run = assembly.assemble(config, backend)
        # The run's own first batches, held in memory and repeated: the input costs (almost)
        # nothing and the same for every row, so a row times the step and its host round trip.
        it = iter(run.built.dataset.take(CACHED).cache().repeat())
        fk, lk = run.dataset.feature_key, run.dataset.label_key

        def elements():
            while True:
                if steps_per_loop == 1:
                    for _ in range(STEPS):
                        batch = next(it)
                        loss, _ = run.trainer.train_step((batch[fk], batch[lk]))
                        float(loss)  # the controller waits for each step's loss
                else:
                    for _ in range(STEPS // steps_per_loop):
                        run.trainer.train_loop(it, steps_per_loop, fk, lk)
                yield STEPS

        return elements()

    return make_iter, lambda steps: steps * config.train.batch_size


def group_rows(cfg: BenchConfig, name: str, backend) -> tuple[list[dict], float, float]:
    config = _config(cfg, name)
    entries = [lambda n=n: _entry(config, backend, n) for _, n in VARIANTS]
    # Windows of about a second or more: clicks its own long windows, the CNN 5 image windows.
    steps = cfg.clicks_window_batches if name == "clicks" else cfg.window_batches * 5
    window = max(2, steps // STEPS)
    measured = rates.one_by_one(entries, cfg, warm_examples=2 * CACHED * cfg.batch, window=window)
    by = {label: m for (label, _), m in zip(VARIANTS, measured, strict=True)}
    noise = rates.spread(by[ONE].median, by[ONE + AA].median)
    rows = [
        row(
            GROUPS[name],
            label,
            by[label],
            unit="examples/s",
            steps_per_loop=n,
            vs_one_step=rates.ratio(by[label].median, by[ONE].median),
        )
        for label, n in VARIANTS
    ]
    return rows, noise, rates.ratio(by[LOOPED].median, by[ONE].median)


def run(cfg: BenchConfig) -> SuiteResult:
    from strategies import make_backend
    from strategies.options import StrategyOptions

    data.clicks(cfg)
    backend = make_backend(StrategyOptions(name="one_device"))
    rows, noises, gains = [], {}, {}
    for name in ("clicks", "synthetic"):
        group, noises[GROUPS[name]], gains[name] = group_rows(cfg, name, backend)
        rows += group
    targets = [
        Target(
            f"steps_per_loop={LOOP} at least 1.2x one step per call on a small model (clicks MLP)",
            1.2,
            gains["clicks"],
            detail="training examples/s, one device, same passes",
            noise=noises[GROUPS["clicks"]],
            source="issue 14",
        ),
        Target(
            f"steps_per_loop={LOOP} costs nothing where compute dominates (64 px CNN): at least 0.95x",
            0.95,
            gains["synthetic"],
            detail="training examples/s, one device, same passes",
            noise=noises[GROUPS["synthetic"]],
            source="issue 14",
        ),
    ]
    notes = (
        f"each element is {STEPS} training steps; the looped row runs them as {STEPS // LOOP} calls of {LOOP}",
        "the one-step rows wait for each step's loss, as the training loop does",
    )
    return SuiteResult("loops", tuple(rows), tuple(targets), notes, noises)
