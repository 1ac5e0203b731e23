"""The job's stages, one transformation per module, numbered in flow order (s00_source, s10_validate,
...): the number keeps the order visible in a listing, the `s` prefix makes each an importable module.

STAGES names them as the graph and the dead letters do (the step names of the job).
"""

STAGES = (
    "00_source",
    "10_validate",
    "20_dedupe",
    "25_lateness",
    "30_enrich",
    "35_velocity",
    "40_features",
    "50_predict",
    "60_sink",
    "90_dead_letter",
)
