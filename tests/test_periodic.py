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


def test_a_call_that_raises_is_logged_and_the_calls_go_on(caplog):
    calls: list[int] = []
    twice = threading.Event()

    def tick() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("the first call fails")
        twice.set()

    every = Every(0.01, tick, "test-every")
    every.start()
    assert twice.wait(5)
    every.stop()
    assert any("test-every: this call failed" in r.getMessage() and r.exc_info for r in caplog.records)
