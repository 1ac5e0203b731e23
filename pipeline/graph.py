r"""The job's PCollection graph: the stages in order, each built from its config section.

    source -> validate -> dedupe -> lateness -> enrich -> velocity -> features -> predict -> sink
                 \__________\__________\__________\__________\___________\__________\________\--> dead letters

`build_pipeline` only wires: it runs nothing, so a test builds it on a TestPipeline and a launch
(pipeline.launch) on the runner it chose. The trainer (tools.train) computes its features with
`featurize`, so a model is trained on what the job computes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import apache_beam as beam

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter
from pipeline.config import JobConfig
from pipeline.io import bigquery, kafka, kafka_client
from pipeline.io.kafka_expansion import JavaExpansion
from pipeline.io.progress import Resume
from pipeline.io.windowed_files import Windowing, new_run_id
from pipeline.shared import feature_sets
from pipeline.shared.clock import RunClock
from pipeline.shared.explain import TreeFile
from pipeline.stages import s00_source as source
from pipeline.stages import s10_validate as validate
from pipeline.stages import s20_dedupe as dedupe
from pipeline.stages import s25_lateness as lateness
from pipeline.stages import s30_enrich as enrich
from pipeline.stages import s35_velocity as velocity
from pipeline.stages import s40_features as features
from pipeline.stages import s50_predict as predict
from pipeline.stages import s60_sink as sink
from pipeline.stages import s90_dead_letter as dead_letter_sink
from pipeline.stages.s50_predict import Challenger, Watch


class Model(NamedTuple):
    """The model the job scores with, as checked before the run (pipeline.launch)."""

    version: str
    sha256: str = ""
    feature_set: str = feature_sets.DEFAULT
    # The same trees in LightGBM's format, checked, for the reasons of a decision (None: no reasons).
    trees: TreeFile | None = None
    # A challenger scored beside it (predict.shadow_model), checked the same way.
    shadow: Challenger | None = None
    # The model card's drift reference (pipeline.shared.drift); None: no drift report.
    drift_reference: dict[str, Any] | None = None
    # The model file ("": predict.model); under predict.model_watch_dir, the version it started with.
    path: str = ""
    watch: Watch | None = None
    # Its model card, as checked (None: a model without one), for the run report.
    card: dict[str, Any] | None = None

    @property
    def computed_set(self) -> str:
        """The feature set the job computes: the model's, or a challenger's that holds it as its
        first columns (the champion then reads those)."""
        shadow = self.shadow.feature_set if self.shadow is not None else ""
        if shadow and len(feature_sets.names(shadow)) > len(feature_sets.names(self.feature_set)):
            return shadow
        return self.feature_set


class Run(NamedTuple):
    """What a launch adds to the configuration: the run's id, its Kafka read and expansion service
    (pipeline.launch resolves kafka.commit for the runner), what an earlier streaming run of the
    same output folder wrote, and where the stateful stages keep their shards on a runner whose
    state dies with the job."""

    run_id: str = ""
    kafka_read: Any = None  # pipeline.io.kafka's read request, when source.kind is kafka
    expansion: JavaExpansion | None = None
    kafka_properties: dict[str, str] | None = None  # read once for the read and every topic sink
    resume: Resume | None = None
    state_dir: str = ""  # pipeline.io.shard_files; "" where the runner's state is durable


def featurize(
    raw: beam.PCollection,
    config: JobConfig,
    clock: RunClock,
    feature_set: str = feature_sets.DEFAULT,
    state_dir: str = "",
) -> tuple[beam.PCollection, list[beam.PCollection]]:
    """10_validate to 40_features: raw records -> EnrichedTransactions with the feature set's vector,
    and each stage's dead letters. `state_dir`: where the stateful stages keep their shards for a
    restart (pipeline.io.shard_files), "" for none."""
    lateness_s = config.streaming.allowed_lateness_seconds
    valid, refused_10 = raw | "10_validate" >> validate.Validate(
        clock=clock,
        max_future_skew_seconds=config.validate_.max_future_skew_seconds,
        allowed_lateness_seconds=lateness_s,
    )
    streaming = config.streaming
    unique, refused_20 = valid | "20_dedupe" >> dedupe.Dedupe(
        horizon_seconds=config.dedupe.horizon_seconds, clock=clock, order=streaming.order,
        shards=streaming.state_shards, margin_seconds=lateness_s, state_dir=state_dir,
    )  # fmt: skip
    on_time, refused_25 = unique | "25_lateness" >> lateness.ApplyLatePolicy(
        allowed_lateness_seconds=lateness_s, late_policy=config.streaming.late_policy, clock=clock
    )
    enriched, refused_30 = on_time | "30_enrich" >> enrich.Enrich(
        customers_path=config.reference.customers,
        merchants_path=config.reference.merchants,
        policy=config.enrich.missing_profile_policy,
        clock=clock,
        store=config.enrich.store,
    )
    refused = [refused_10, refused_20, refused_25, refused_30]
    if feature_sets.uses_velocity(feature_set):  # a stateless model's job has no 35_velocity
        enriched, refused_35 = enriched | "35_velocity" >> velocity.Velocity(
            clock=clock, order_wait_seconds=config.order_wait_seconds, order=streaming.order,
            shards=streaming.state_shards, state_dir=state_dir,
        )  # fmt: skip
        refused.append(refused_35)
    featured, refused_40 = enriched | "40_features" >> features.ComputeFeatures(clock=clock, feature_set=feature_set)
    return featured, [*refused, refused_40]


def build_pipeline(
    p: beam.Pipeline,
    config: JobConfig,
    model: Model,
    run: Run | None = None,
    raw_records: beam.PCollection | None = None,
) -> dict[str, beam.PCollection]:
    """Adds the whole job to `p`; returns its named PCollections (for tests). `raw_records` replaces
    the source (a TestStream in tests)."""
    run = run or Run()
    clock = RunClock(config.run.as_of)
    out = Outputs(config, run)
    if raw_records is None:
        raw, refused_00 = p | "00_source" >> source.ReadSource(
            config.source, input=config.input, pubsub=config.pubsub, kafka_read=run.kafka_read, clock=clock,
            idle_seconds=config.streaming.stop_after_idle_seconds, resume=run.resume,
        )  # fmt: skip
    else:
        raw, refused_00 = raw_records, p | "00_source" >> beam.Create([]).with_output_types(DeadLetter)
    featured, refused = featurize(raw, config, clock, model.computed_set, run.state_dir)
    thresholds = predict.Thresholds(config.thresholds.version, config.thresholds.review, config.thresholds.decline)
    scored, refused_50 = featured | "50_predict" >> predict.Predict(
        model_path=model.path or config.predict.model,
        model_version=model.version,
        thresholds=thresholds,
        min_batch_size=config.predict.min_batch_size,
        max_batch_size=config.predict.max_batch_size,
        clock=clock,
        expected_sha256=model.sha256,
        include_features=config.output.include_features,
        extras=scoring_extras(config, model, thresholds),
        decisions_by_hour=not config.is_streaming,  # counters by event hour: batch only (50_predict)
    )
    refused_60 = scored | "60_sink" >> sink.WriteScored(
        output_dir=config.output.dir, num_shards=config.output.num_shards, parquet=config.output.parquet,
        clock=clock, windowing=out.windows, topics=out.scored_topics, table=out.table(config.bigquery.scored_table),
    )  # fmt: skip
    dead_letters = (refused_00, *refused, refused_50, refused_60) | "AllDeadLetters" >> beam.Flatten()
    dead_letters | "90_dead_letter" >> dead_letter_sink.WriteDeadLetters(
        output_dir=config.output.dir, num_shards=config.output.num_shards, payload_policy=config.dead_letter.payload,
        windowing=out.windows, topic=out.topic(config.kafka.dead_letter_topic), value_format=config.kafka.value_format,
        table=out.table(config.bigquery.dead_letter_table),
    )  # fmt: skip
    return {"raw": raw, "featured": featured, "scored": scored, "dead_letters": dead_letters}


def scoring_extras(config: JobConfig, model: Model, thresholds: predict.Thresholds) -> predict.Extras:
    """What 50_predict scores with besides the model: reasons, a challenger, drift bins."""
    # A challenger's longer vector: the champion reads its own first columns.
    longer = model.computed_set != model.feature_set
    return predict.Extras(
        trees=model.trees,
        explain_from=predict.explain_from(config.predict.explain, thresholds),
        reasons=config.predict.reasons,
        shadow=model.shadow,
        drift_reference=model.drift_reference,
        feature_names=feature_sets.names(model.feature_set),
        watch=model.watch,
        feature_set=model.feature_set if longer else "",
        champion_width=len(feature_sets.names(model.feature_set)) if longer else 0,
    )


class Outputs:
    """Where the sinks write besides files: topics and tables, and a streaming run's windows."""

    def __init__(self, config: JobConfig, run: Run):
        self._config = config
        self._run = run
        streaming = config.streaming
        self.windows = (
            Windowing(
                streaming.window_seconds,
                streaming.allowed_lateness_seconds,
                run.run_id or new_run_id(),
                max(config.output.num_shards, 1),
            )
            if config.is_streaming
            else None
        )
        self.scored_topics = sink.Topics(
            self.topic(config.kafka.scored_topic),
            self.topic(config.kafka.alerts_topic),
            config.pubsub.alerts_topic,
            config.kafka.value_format,
        )

    def topic(self, name: str | None) -> kafka.TopicSink | None:
        if name is None:
            return None
        assert self._run.expansion is not None, "a Kafka sink needs the run's expansion service"
        producer = kafka_client.producer_config(
            self._config.kafka.bootstrap_servers or "", self._run.kafka_properties or {}
        )
        return kafka.TopicSink(name, producer, self._run.expansion.address)

    def table(self, name: str | None) -> bigquery.TableSink | None:
        return bigquery.TableSink(name, self._config.bigquery.method) if name is not None else None
