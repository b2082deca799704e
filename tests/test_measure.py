"""The timing protocol on synthetic workloads whose answer is known."""

import time
from dataclasses import replace

import pytest

from pytest_modelopt.budget import Verdict, judge_all
from pytest_modelopt.measure import Comparison, Interleaver, MeasureSettings, Timing
from pytest_modelopt.metrics import latency_metrics

FAST = MeasureSettings(warmup_s=0.05, warmup_calls=5, max_time=1.0, min_rounds=20)


def sleeper(seconds: float):
    return lambda: time.sleep(seconds)


def test_first_call_is_kept_out_of_the_samples() -> None:
    calls = []

    def lazy() -> None:
        time.sleep(0.05 if not calls else 0.001)
        calls.append(1)

    comparison = Interleaver(lazy, sleeper(0.001), FAST).run()
    assert comparison.variant.first_call_s >= 0.05
    assert max(comparison.variant.samples_s) < 0.04
    assert comparison.variant.warmup_calls >= 5


def test_a_clear_slowdown_is_measured_and_fails() -> None:
    comparison = Interleaver(sleeper(0.004), sleeper(0.002), FAST).run()
    assert comparison.speedup == pytest.approx(0.5, rel=0.15)
    low, high = comparison.speedup_interval
    assert low <= comparison.speedup <= high
    checks = judge_all({"speedup": ">=0.9"}, latency_metrics(comparison, 1, FAST))
    assert checks[0].verdict is Verdict.FAIL


def test_identical_callables_pass_a_loose_budget() -> None:
    comparison = Interleaver(sleeper(0.005), sleeper(0.005), FAST).run()
    checks = judge_all({"speedup": ">=0.8"}, latency_metrics(comparison, 1, FAST))
    assert checks[0].verdict is Verdict.PASS


def test_stops_once_the_interval_is_narrow_enough() -> None:
    settings = MeasureSettings(warmup_s=0.05, max_time=30, target_width=0.2, min_rounds=20)
    start = time.perf_counter()
    comparison = Interleaver(sleeper(0.001), sleeper(0.001), settings).run()
    assert comparison.stopped_by == "target width"
    assert time.perf_counter() - start < 10


def test_time_cap_is_respected() -> None:
    settings = MeasureSettings(warmup_s=0.05, max_time=0.5, target_width=1e-9)
    start = time.perf_counter()
    comparison = Interleaver(sleeper(0.001), sleeper(0.001), settings).run()
    assert comparison.stopped_by == "time cap"
    assert time.perf_counter() - start < 2.0


def test_the_time_cap_stretches_to_the_rounds_an_interval_needs() -> None:
    settings = MeasureSettings(warmup_s=0.05, warmup_calls=2, max_time=0.5, target_width=1e-9)
    comparison = Interleaver(sleeper(0.05), sleeper(0.05), settings).run()
    assert comparison.rounds >= 11  # the fewest with a finite 99.9% signed-rank interval
    assert all(abs(bound) < float("inf") for bound in comparison.speedup_interval)
    assert comparison.elapsed_s < 4 * 0.5 + 0.2


def test_the_stretch_is_bounded() -> None:
    settings = MeasureSettings(warmup_s=0.05, warmup_calls=2, max_time=0.1, target_width=1e-9)
    comparison = Interleaver(sleeper(0.1), sleeper(0.1), settings).run()
    assert comparison.stopped_by == "time cap"
    assert comparison.rounds < 11
    assert comparison.elapsed_s < 1.5


def test_run_again_adds_rounds() -> None:
    interleaver = Interleaver(sleeper(0.001), sleeper(0.001), FAST)
    first = interleaver.run(max_time=0.2).rounds
    assert interleaver.run(max_time=0.2).rounds > first


def _comparison(variant: list[float], reference: list[float]) -> Comparison:
    ratios = [r / v for v, r in zip(variant, reference, strict=True)]
    from pytest_modelopt.stats import ratio_estimate

    speedup, interval = ratio_estimate(ratios, 0.999)
    return Comparison(
        variant=Timing(0.0, samples_s=variant),
        reference=Timing(0.0, samples_s=reference),
        ratios=ratios,
        speedup=speedup,
        speedup_interval=interval,
        confidence=0.999,
        rounds=len(ratios),
        elapsed_s=1.0,
        stopped_by="time cap",
        threads=None,
    )


def test_known_sample_sets_get_their_known_verdicts() -> None:
    import numpy as np

    rng = np.random.default_rng(4)
    reference = list(rng.lognormal(np.log(2e-3), 0.03, 300))
    same = judge_all(
        {"speedup": ">=0.99"}, latency_metrics(_comparison(reference, reference), 1, FAST)
    )
    assert same[0].verdict is Verdict.PASS
    slower = [x * 1.1 for x in rng.lognormal(np.log(2e-3), 0.03, 300)]
    clear = judge_all(
        {"speedup": ">=0.99"}, latency_metrics(_comparison(slower, reference), 1, FAST)
    )
    assert clear[0].verdict is Verdict.FAIL
    few = judge_all(
        {"speedup": ">=0.99"}, latency_metrics(_comparison(slower[:5], reference[:5]), 1, FAST)
    )
    assert few[0].verdict is Verdict.INCONCLUSIVE  # five rounds cannot give a 99.9% interval


def test_very_noisy_samples_are_inconclusive() -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    variant = list(rng.uniform(0.5e-3, 3e-3, 500))
    reference = list(rng.uniform(0.5e-3, 3e-3, 500))
    metrics = latency_metrics(_comparison(variant, reference), 1, FAST)
    check = judge_all({"speedup": ">=0.5"}, metrics)[0]
    assert check.verdict is Verdict.INCONCLUSIVE
    assert "too noisy to judge" in check.reason


def test_noise_is_judged_on_the_rounds_not_the_raw_calls() -> None:
    import numpy as np

    # calls spread over a factor of six, but each round's variant takes half its reference:
    # between runtimes, a block's first calls are slow while pools wake, and its median is not
    rng = np.random.default_rng(5)
    reference = list(rng.uniform(0.5e-3, 3e-3, 200))
    variant = [x / 2 for x in reference]
    metrics = latency_metrics(_comparison(variant, reference), 1, FAST)
    check = judge_all({"speedup": ">=1.5"}, metrics)[0]
    assert check.verdict is Verdict.PASS


def test_p90_is_indicative_below_64_samples() -> None:
    samples = [1e-3] * 40
    metrics = latency_metrics(_comparison(samples, samples), 1, FAST)
    check = judge_all({"latency_p90_ms": "<=5"}, metrics)[0]
    assert check.verdict is Verdict.INCONCLUSIVE
    assert "p90 is indicative only: 40 samples, a verdict needs at least 64" in check.reason
    assert judge_all({"latency_p50_ms": "<=5"}, metrics)[0].verdict is Verdict.PASS


def test_threads_are_fixed_and_recorded() -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    settings = MeasureSettings(threads=1, warmup_s=0.01, max_time=0.1)
    seen = []
    comparison = Interleaver(
        lambda: seen.append(torch.get_num_threads()), lambda: None, settings
    ).run()
    assert set(seen) == {1}
    assert comparison.threads == 1
    assert torch.get_num_threads() == before


# -- worker processes --------------------------------------------------------------------------


def sleeping_runner(seconds: float, pid_file: str | None = None):
    """A worker's loader (imported by name in the worker): run(batch) sleeps ``seconds``."""
    if pid_file:
        import os
        from pathlib import Path

        with Path(pid_file).open("a") as file:  # each worker that loads it adds its pid
            file.write(f"{os.getpid()}\n")
    return lambda batch: time.sleep(seconds)


def failing_runner():
    raise RuntimeError("cannot load this variant here")


def sleeping_worker(pid_file):
    """A worker process whose variant sleeps 3 ms a call, appending its pid to ``pid_file``."""
    from pytest_modelopt.worker import Loader, Worker

    loader = Loader("test_measure:sleeping_runner", {"seconds": 0.003, "pid_file": str(pid_file)})
    return Worker(loader, None, threads=1, fallback=sleeper(0.003))


def test_a_worker_times_per_call_latencies_in_its_own_process(tmp_path) -> None:
    import os

    pid_file = tmp_path / "pid"
    worker = sleeping_worker(pid_file)
    settings = MeasureSettings(warmup_s=0.05, max_time=1.5, block_s=0.02, transition_s=0.005)
    comparison = Interleaver(worker, sleeper(0.0015), settings).run()
    assert comparison.isolation == {"variant": "worker process", "reference": "in process"}
    assert comparison.cross_runtime  # a worker is always timed in blocks
    assert comparison.variant.block_calls >= 2
    assert min(comparison.variant.samples_s) >= 0.003  # one sample per call, not per block
    assert comparison.speedup == pytest.approx(0.5, rel=0.2)
    assert str(os.getpid()) not in pid_file.read_text().split()


def test_a_worker_comparison_is_timed_in_fresh_process_pairs_its_interval_reaching_theirs(
    tmp_path,
) -> None:
    """Issue 19: a pair of processes carries an effect of its own that its rounds cannot show;
    timed in several fresh pairs, the interval reaches each pair's estimate."""
    pid_file = tmp_path / "pids"
    worker = sleeping_worker(pid_file)
    # 1 s per pair: about 20 rounds of 0.05 s, so that each pair reaches the engine's floor of
    # rounds even on a loaded machine (at 0.5 s a pair, a busy machine left 10)
    settings = MeasureSettings(
        warmup_s=0.05, max_time=3.0, block_s=0.02, transition_s=0.005, process_pairs=3
    )
    interleaver = Interleaver(worker, sleeper(0.0015), settings)
    comparison = interleaver.run()
    assert len(set(pid_file.read_text().split())) == 3  # three fresh worker processes
    pairs = comparison.process_pairs
    assert len(pairs) == 3
    assert sum(pair["rounds"] for pair in pairs) == comparison.rounds
    low, high = comparison.speedup_interval
    for pair in pairs:
        assert pair["rounds"] >= 11  # each pair bounds an interval of its own
        assert low <= pair["speedup"] <= high  # the interval reaches every pair's estimate
    assert comparison.to_dict()["process_pairs"] == pairs
    # measuring again (an inconclusive verdict's second measurement) adds one fresh pair
    again = interleaver.run()
    assert len(again.process_pairs) == 4
    assert len(set(pid_file.read_text().split())) == 4


def test_in_process_sides_are_timed_in_one_pass() -> None:
    comparison = Interleaver(sleeper(0.001), sleeper(0.001), replace(FAST, process_pairs=3)).run()
    assert comparison.process_pairs == []
    assert "process_pairs" not in comparison.to_dict()


def test_a_worker_that_cannot_start_falls_back_with_the_reason() -> None:
    from pytest_modelopt.worker import Loader, Worker

    broken = Worker(Loader("test_measure:failing_runner"), None, threads=1, fallback=sleeper(0.001))
    unpicklable = Worker(
        Loader("test_measure:sleeping_runner", {"seconds": lambda: 0}),
        None,
        threads=1,
        fallback=sleeper(0.001),
        label="local",
    )
    comparison = Interleaver(broken, unpicklable, FAST).run(max_time=0.3)
    variant, reference = comparison.isolation["variant"], comparison.isolation["reference"]
    assert variant.startswith("in process: variant worker failed: RuntimeError: cannot load")
    assert reference.startswith("in process: local cannot be sent to a worker process")
    assert comparison.rounds > 0


# -- throughput at batch sizes -----------------------------------------------------------------


class OneItemOnly:
    """A python model with a fixed input shape: one item per call."""

    def __call__(self, x):
        if len(x) != 1:
            raise ValueError(f"expected 1 item, got {len(x)}")
        return x * 2


def test_throughput_at_batch_sizes(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from models import QUICK, mlp_spec
    from pytest_modelopt import Evaluator
    from pytest_modelopt.metrics import batch_of

    assert tuple(batch_of(torch.ones(1, 16), 8).shape) == (8, 16)
    result = Evaluator(mlp_spec(), settings=QUICK, workdir=tmp_path).evaluate("torchscript")
    figures = result.throughput_at([1, 8], seconds=0.2)
    for size, measured in figures.items():
        low, high = measured.interval
        assert 0 < low <= measured.value <= high, size
    # A tiny model's call costs about the same for 1 or 8 items: far more items per second.
    assert figures[8].value > 2 * figures[1].value
    assert result.to_dict()["throughput_at_batch"]["8"]["items_per_s"] == figures[8].value


def test_throughput_at_a_batch_the_variant_cannot_run_says_so(tmp_path) -> None:
    import numpy as np

    from pytest_modelopt import Evaluator, ModelSpec
    from pytest_modelopt.errors import BuildError

    spec = ModelSpec(name="fixed", factory=OneItemOnly, example_input=np.zeros((1, 4)))
    settings = MeasureSettings(threads=1, warmup_s=0.01, warmup_calls=3, max_time=0.2)
    result = Evaluator(spec, settings=settings, workdir=tmp_path).evaluate("eager")
    assert result.throughput_at([1], seconds=0.05)[1].value > 0
    with pytest.raises(BuildError, match=r"fixed\[eager\] cannot run a batch of 4: ValueError"):
        result.throughput_at([4])


class Counted:
    """A meter whose calls each cost a fixed count, up to a small repeating wobble, and take
    5 ms (a real counted call takes seconds: far longer than a check of the interval)."""

    isolation = "counted"
    unit = "instructions"
    running = True

    def __init__(self, count: float, wobble: tuple[float, ...] = (0.0,)) -> None:
        self.count, self.wobble, self.calls = count, wobble, 0

    def start(self) -> None:
        return None

    def sample(self, calls: int) -> list[float]:
        samples = []
        for _ in range(calls):
            time.sleep(0.005)
            samples.append(self.count * (1 + self.wobble[self.calls % len(self.wobble)]))
            self.calls += 1
        return samples

    def close(self) -> None:
        return None


def test_counting_settings_decide_in_three_rounds_without_a_first_call() -> None:
    from pytest_modelopt.counting import counting_settings

    settings = counting_settings(MeasureSettings())
    variant, reference = Counted(1000.0), Counted(4000.0)
    comparison = Interleaver(variant, reference, settings).run()
    assert (comparison.rounds, comparison.stopped_by) == (3, "target width")
    assert variant.calls == reference.calls == 3  # every call is a round's: none wasted
    assert comparison.speedup_interval == (4.0, 4.0)


def test_counts_that_wobble_get_rounds_one_at_a_time_until_they_decide() -> None:
    from pytest_modelopt.counting import counting_settings

    settings = counting_settings(MeasureSettings())
    variant = Counted(1000.0, wobble=(0.0, 0.002, -0.001, 0.001))
    comparison = Interleaver(variant, Counted(4000.0), settings).run()
    low, high = comparison.speedup_interval
    assert comparison.stopped_by == "target width"
    assert 3 < comparison.rounds < 10  # checked each round, not ten rounds at a time
    assert (high - low) / comparison.speedup <= settings.target_width


def test_an_unknown_estimator_is_refused() -> None:
    with pytest.raises(ValueError, match="estimator must be one of signed_rank, student_t"):
        MeasureSettings(estimator="mean")
