import threading

from pipeline.shared.periodic import Every


def test_every_calls_until_stopped_and_stop_waits_for_a_call_in_flight():
    calls: list[int] = []
    called, release = threading.Event(), threading.Event()
    finished = []

    def tick() -> None:
        calls.append(1)
        called.set()
        release.wait(5)
        finished.append(1)

    every = Every(0.01, tick, "test-every")
    every.start()
    assert called.wait(5)
    stopper = threading.Thread(target=every.stop)
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive()  # the call in flight holds stop() back
    release.set()
    stopper.join(5)
    assert not stopper.is_alive() and len(finished) == len(calls)
    after = len(calls)
    threading.Event().wait(0.05)
    assert len(calls) == after  # nothing called once stop() has returned


def test_stop_before_start_returns():
    Every(1.0, lambda: None, "test-every").stop()
