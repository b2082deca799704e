from pytest_modelopt.memory import PeakMemory


def test_a_transient_peak_is_caught() -> None:
    with PeakMemory() as peak:
        block = bytearray(200 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        del block
    assert peak.host_mb >= 150
    assert peak.method


def test_memory_held_before_the_phase_does_not_count() -> None:
    held = bytearray(200 * 2**20)
    held[::4096] = b"x" * len(held[::4096])
    with PeakMemory() as peak:
        small = bytearray(2**20)
        del small
    assert peak.host_mb < 50
    del held
