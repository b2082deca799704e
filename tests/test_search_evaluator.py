"""Evaluator.best: a real search over pure-Python fake techniques (fast), and one over a tiny
torch model with the real techniques, under a short time budget."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_modelopt import Evaluator, MeasureSettings, ModelSpec, Variant
from pytest_modelopt.cli import main
from pytest_modelopt.registry import _REGISTRY, register_technique

QUICK = MeasureSettings(threads=1, warmup_s=0.02, warmup_calls=3, max_time=0.3, noise_threshold=5)
FAKES = ("sfake_fast", "sfake_faster", "sfake_lossy", "sfake_shrink", "sfake_needs_gpu")


class Toy:
    """A 'model': busy-loops for `work` steps, returns two class scores (the first the larger
    for a positive input, unless `flipped`)."""

    def __init__(self, work: int = 20_000, flipped: bool = False) -> None:
        self.work, self.flipped = work, flipped

    def __call__(self, x: float) -> list[list[float]]:
        total = 0
        for i in range(self.work):
            total += i
        scores = [2.0 * x, float(x)]
        return [scores[::-1] if self.flipped else scores]


def _variant(ctx, model: Toy, size: int, *, yields: bool = False) -> Variant:
    path = Path(ctx.workdir) / "model.bin"
    path.write_bytes(b"w" * size)
    return Variant(
        model,
        (path,),
        runtime="python",
        precision="fp32",
        model=model if yields else None,
    )


@pytest.fixture
def fakes() -> Iterator[None]:
    """Fake techniques, registered for one test: two deployments (a tenth and a twentieth of
    the work), one that flips the prediction (breaks agreement), one that halves the work and
    the file and yields a module to chain from, one that needs a GPU."""

    @register_technique("sfake_fast", frameworks=("python",))
    def fast(ctx):
        return _variant(ctx, Toy(ctx.model.work // 10), 20)

    @register_technique("sfake_faster", frameworks=("python",))
    def faster(ctx):
        return _variant(ctx, Toy(ctx.model.work // 20), 200)  # too large

    @register_technique("sfake_lossy", frameworks=("python",))
    def lossy(ctx):
        return _variant(ctx, Toy(ctx.model.work // 40, flipped=True), 10)

    @register_technique("sfake_shrink", frameworks=("python",))
    def shrink(ctx):
        return _variant(ctx, Toy(ctx.model.work // 2), 30, yields=True)

    @register_technique("sfake_needs_gpu", frameworks=("python",), gpu=True)
    def needs_gpu(ctx):
        raise AssertionError("never built without a GPU")

    yield
    for name in FAKES:
        _REGISTRY.pop(name, None)


def toy_evaluator(tmp_path: Path, log: list[str]) -> Evaluator:
    from pytest_modelopt.stats import ratio_estimate

    # scipy is imported on the first interval: not inside the first candidate's 0.3 s of timing
    ratio_estimate([1.0] * 20, 0.999)
    spec = ModelSpec(name="toy", factory=Toy, example_input=3.0)
    return Evaluator(spec, settings=QUICK, workdir=tmp_path / "work", log=log.append)


def test_search_measures_chains_prunes_and_recommends(fakes, tmp_path: Path) -> None:
    log: list[str] = []
    evaluator = toy_evaluator(tmp_path, log)
    if evaluator.hardware.gpus:
        pytest.skip("this test needs a machine without a GPU (sfake_needs_gpu must skip)")
    found = evaluator.best(
        {"top1_agreement": ">=99%", "size_ratio": "<=0.5"},
        techniques=list(FAKES),
        max_time=120,
    )
    # singles, then the chains of the module-yielding sfake_shrink with the deployments that
    # kept agreement; sfake_lossy broke it, so nothing is chained on it
    assert sorted(found.results) == [
        "sfake_fast",
        "sfake_faster",
        "sfake_lossy",
        "sfake_shrink",
        "sfake_shrink+sfake_fast",
        "sfake_shrink+sfake_faster",
    ]
    assert found.skipped == [("sfake_needs_gpu", f"sfake_needs_gpu: {_no_gpu(evaluator)}")]
    assert found.pruned == [
        ("...+sfake_lossy", "sfake_lossy alone: top1_agreement 0.00% breaks >= 99.00%")
    ]
    assert found.untried == []
    assert found.failed == []
    choice = found.choice
    excluded = {c.label: c.why_excluded() for c in choice.excluded}
    assert excluded["sfake_lossy"] == "top1_agreement 0.00% breaks >= 99.00%"
    # 200 bytes against the reference's pickle, about 70: too large, and so is its chain
    assert excluded["sfake_faster"].startswith("size_ratio ")
    assert excluded["sfake_shrink+sfake_faster"].startswith("size_ratio ")
    # half the work, then a tenth of that: surely the fastest of the feasible ones
    best = found.recommended
    assert best is not None
    assert best.technique == "sfake_shrink+sfake_fast"
    for other in choice.ranked:  # nobody feasible is surely faster than the recommendation
        assert other.metrics["speedup"].interval[0] <= best.metrics["speedup"].interval[1]
    # progress: what is built and measured, how many remain, elapsed and remaining time
    assert any(
        line.startswith("search toy: candidate 1/4: sfake_fast: building and measuring (")
        and "s elapsed, " in line
        and "s left, 3 more after it)" in line
        for line in log
    ), log
    assert "search toy: skipping sfake_needs_gpu: " + found.skipped[0][1] in log
    assert any(line.startswith("search toy: 2 chains to try: sfake_shrink+") for line in log)
    assert any(line.startswith("search toy: search of toy: ") for line in log)
    assert log[-1] == f"search toy: {choice.verdict()}"
    table = found.table()
    assert "pruned:\n  ...+sfake_lossy: sfake_lossy alone" in table
    assert "skipped:\n  sfake_needs_gpu: " in table


def test_time_budget_stops_starting_candidates_and_reports_the_rest(fakes, tmp_path: Path) -> None:
    log: list[str] = []
    evaluator = toy_evaluator(tmp_path, log)
    found = evaluator.best(
        ["top1_agreement>=99%"],
        techniques=["sfake_fast", "sfake_faster", "sfake_shrink"],
        max_time=0.01,  # spent during the first candidate
    )
    assert list(found.results) == ["sfake_fast"]
    assert found.untried == ["sfake_faster", "sfake_shrink"]
    assert found.elapsed_s > 0.01
    assert any(
        line.startswith("search toy: time budget spent (")
        and line.endswith("s of 0.01 s): not trying sfake_faster, sfake_shrink")
        for line in log
    ), log
    assert "2 untried" in found.summary()
    assert "untried (time budget spent): sfake_faster, sfake_shrink" in found.table()
    assert found.recommended is not None


def test_a_recorded_choice_is_measured_first_whatever_the_time_budget(
    fakes, tmp_path: Path
) -> None:
    """A later run checks the recorded choice: a search that ran out of time before reaching it
    would report it unmeasured and fail the contract for no reason of the variant's."""
    log: list[str] = []
    evaluator = toy_evaluator(tmp_path, log)
    found = evaluator.best(
        ["top1_agreement>=99%"],
        techniques=["sfake_fast", "sfake_faster", "sfake_shrink"],
        max_time=0.01,
        first=["sfake_shrink+sfake_fast"],
    )
    assert list(found.results) == ["sfake_shrink+sfake_fast"]  # then the budget was spent
    assert found.untried == ["sfake_fast", "sfake_faster", "sfake_shrink"]
    assert any("recorded choice 1/1: sfake_shrink+sfake_fast" in line for line in log), log


class Disturbed(Toy):
    """A toy whose calls take 1x or 30x their work at random while ``disturbed``: the per-round
    speedups of a measurement then spread far beyond the noise threshold."""

    disturbed = True

    def __init__(self, work: int) -> None:
        super().__init__(work)
        self._random = random.Random(0)

    def __call__(self, x: float) -> list[list[float]]:
        if Disturbed.disturbed and self._random.random() < 0.5:
            for _ in range(29):
                super().__call__(x)
        return super().__call__(x)


@pytest.fixture
def noisy_fake() -> Iterator[None]:
    @register_technique("sfake_noisy", frameworks=("python",))
    def noisy(ctx):
        return _variant(ctx, Disturbed(ctx.model.work // 10), 20)

    Disturbed.disturbed = True
    yield
    _REGISTRY.pop("sfake_noisy", None)


@pytest.mark.parametrize("quiet_again", [True, False], ids=["quiet-again", "always-disturbed"])
def test_a_contender_too_noisy_to_decide_is_measured_again_afresh(
    noisy_fake, tmp_path: Path, quiet_again: bool
) -> None:
    """A disturbed measurement decides nothing, so its candidate could not win a tie however
    fast it is: the search measures such a contender again, afresh, before it chooses."""
    log: list[str] = []

    def record(line: str) -> None:
        log.append(line)
        if quiet_again and "measuring again afresh" in line:
            Disturbed.disturbed = False  # the machine's disturbance is over

    evaluator = toy_evaluator(tmp_path, log)
    evaluator.log = record
    evaluator.settings = replace(QUICK, noise_threshold=0.25)
    found = evaluator.best(["top1_agreement>=99%"], techniques=["sfake_noisy"], chains=False)
    assert any(
        line.startswith("search toy: sfake_noisy: speedup too noisy to decide (")
        and line.endswith("; measuring again afresh (1 of 2)")
        for line in log
    ), log
    assert len(found.records) == 1  # the fresh measurement replaced the disturbed one
    [(name, outcome)] = found.remeasured
    assert name == "sfake_noisy"
    assert found.recommended is not None
    if quiet_again:
        assert outcome.startswith("1 more measurement(s), decided: ")
        assert found.recommended.technique == "sfake_noisy"  # a tenth of the work: 10x
        assert found.recommended.metrics["speedup"].interval[0] > 2
    else:
        assert outcome.startswith("2 more measurement(s), still undecided: ")
        assert found.recommended.technique == "eager"  # a figure that can decide
    assert f"remeasured:\n  sfake_noisy: {outcome}" in found.table()
    assert "1 noisy contenders remeasured" in found.summary()


def test_the_command_line_gives_the_in_session_answer(
    fakes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluator = toy_evaluator(tmp_path, [])
    found = evaluator.best(
        ["top1_agreement>=99%"], techniques=["sfake_fast", "sfake_lossy"], chains=False
    )
    results = tmp_path / "search.json"
    found.write_results(results)
    assert main(["best", str(results), "--budget", "top1_agreement>=99%"]) == 0
    out = capsys.readouterr().out
    assert found.choice.table() in out
    assert found.recommended is not None
    assert f"recommended: {found.recommended.label}" in out


def test_bad_arguments_fail_before_anything_is_built(fakes, tmp_path: Path) -> None:
    from pytest_modelopt.errors import BudgetError, UnknownTechniqueError

    log: list[str] = []
    evaluator = toy_evaluator(tmp_path, log)
    with pytest.raises(BudgetError, match="unknown budget metric 'agreement'"):
        evaluator.best(["agreement>=99%"])
    with pytest.raises(UnknownTechniqueError, match="unknown technique 'sfake_nope'"):
        evaluator.best(["top1_agreement>=99%"], techniques=["sfake_nope"])
    with pytest.raises(ValueError, match="max_time must be a number of seconds > 0"):
        evaluator.best([], max_time=0)
    assert log == []


def test_a_tiny_torch_model_searched_with_the_real_techniques(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from models import mlp_spec

    log: list[str] = []
    evaluator = Evaluator(mlp_spec(), settings=QUICK, workdir=tmp_path / "mlp", log=log.append)
    found = evaluator.best(
        {"top1_agreement": ">=95%"},
        techniques=["torchscript", "dynamic_int8", "lowrank", "fp16", "tensorrt"],
        max_time=60,
    )
    skipped = dict(found.skipped)
    if not evaluator.hardware.gpus:
        assert skipped["tensorrt"] == f"tensorrt: {_no_gpu(evaluator)}"
    assert {"torchscript", "dynamic_int8"} <= set(found.results)
    # lowrank yields a torch module: chained with the deployments that kept agreement, unless
    # it broke agreement itself, which is then said
    if "lowrank" in found.results:
        lowrank = found.choice.by_label("lowrank")
        if lowrank.breaks_quality():
            assert ("lowrank+...", f"lowrank alone: {lowrank.why_excluded()}") in found.pruned
        else:
            assert any(name.startswith("lowrank+") for name in found.results), found.table()
    best = found.recommended
    assert best is not None
    for other in found.ranked:
        assert other.metrics["speedup"].interval[0] <= best.metrics["speedup"].interval[1]
    assert found.elapsed_s < 60 + 30  # one candidate may overrun the budget, not more


def test_a_technique_that_trains_is_skipped_on_a_spec_without_train_data(tmp_path: Path) -> None:
    """In a search of every technique, one the spec gives no training data for does not apply:
    skipped with the reason, not "failed to build" (a test naming it still fails, with the same
    reason)."""
    pytest.importorskip("torch")
    from models import mlp_spec

    evaluator = Evaluator(mlp_spec(), settings=QUICK, workdir=tmp_path / "mlp")
    found = evaluator.best({"top1_agreement": ">=95%"}, techniques=["distilled", "qat_int8"])
    assert found.failed == []
    skipped = dict(found.skipped)
    for technique in ("distilled", "qat_int8"):
        assert skipped[technique].startswith(
            f"{technique} trains mlp, whose ModelSpec has no train_data"
        )


def _no_gpu(evaluator: Evaluator) -> str:
    detail = "; ".join(evaluator.hardware.notes) or "NVML found no device"
    return f"needs an NVIDIA GPU, none found ({detail})"
