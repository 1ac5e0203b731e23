"""The one Beam internal the job touches (pipeline.beam_compat), pinned to the Beam version it was read on."""

import apache_beam
from apache_beam.runners.portability.portable_runner import PipelineResult

from pipeline import beam_compat


def test_beam_is_the_version_the_compat_module_was_read_on():
    # On an upgrade: check that a portable result still caches its metrics in `_metrics`, then move the pin.
    assert apache_beam.__version__ == beam_compat.PINNED_BEAM_VERSION


def test_a_portable_result_caches_its_metrics_where_the_compat_module_clears_them():
    import inspect

    assert "self._metrics" in inspect.getsource(PipelineResult.metrics)

    class Result:
        _metrics = "stale"
        asked = 0

        def metrics(self):
            self.asked += 1
            return self._metrics or "fresh"

    assert beam_compat.fresh_metrics(Result()) == "fresh"
