"""Launching the job: the checks before a run (model, profile store), the runner's Kafka read, the
output folder, running to the end (or submitting to a service) and publishing.

A batch run's results are published into <output_dir> only when the job has finished
(pipeline.io.output_folder); the summary goes to <output_dir>/summary.json, written last. A
streaming run adds one file set per window as windows close, refreshes summary.json every
streaming.summary_interval_seconds, and drains and stops after streaming.stop_after_idle_seconds
without input, or on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

from pipeline import picture
from pipeline import report as run_report
from pipeline import summary as run_summary
from pipeline.config import JobConfig
from pipeline.graph import Model, Run, build_pipeline
from pipeline.io import drain, files, kafka, kafka_client, profile_store, progress, shard_files
from pipeline.io.kafka_expansion import JavaExpansion, KafkaSetupError
from pipeline.io.output_folder import OutputFolder
from pipeline.local import runners
from pipeline.local.monitoring import Facts, Monitor, ProgressLine, progress_wanted
from pipeline.local.streaming import StreamingWatch, in_main_thread
from pipeline.local.watchdog import WorkerWatchdog, worker_processes
from pipeline.shared import drift, feature_sets, metrics, model_check, model_versions
from pipeline.shared.errors import ConfigError
from pipeline.shared.explain import tree_file
from pipeline.shared.model_card import file_digest
from pipeline.stages.s50_predict import Challenger, Watch


class RunFailedError(RuntimeError):
    """The job did not finish (a worker died, the runner failed): nothing was published."""


# --- before the run -------------------------------------------------------------------------------


def check_model(config: JobConfig) -> dict[str, Any] | None:
    """Load and probe the model before the job starts, so that a broken model stops it with exit 2;
    returns its model card (None when it has none), checked against the file."""
    return model_check.check_model(config.predict.model)


def model_in_use(config: JobConfig) -> Model:
    """The checked model: its version, sha256 and feature set; with predict.model_watch_dir, the
    newest valid version there (predict.model when there is none yet)."""
    path, started_with = config.predict.model, ""
    card: dict[str, Any] | None
    folder = config.predict.model_watch_dir
    found = model_versions.newest_valid(folder, None, "", set())[0] if folder else None
    if found is not None:
        path, card, started_with = found.model_path, found.card, found.name
        version = config.predict.model_version or found.version
    else:
        card = check_model(config)
    # The card's sha256 has just been checked against the file: no need to read the file again.
    # Workers refuse a model file whose bytes are not these (one replaced after the start).
    sha256 = card["sha256"].lower() if card is not None else file_digest(path)
    if found is None:
        version = model_version(config, card, sha256)
    model = model_of(config, path, card, version, sha256, started_with)
    if model.trees is None and config.predict.explain != "none":
        logging.getLogger(__name__).warning(
            "predict.explain %s: model %s has no contributions file in its model card (train it with "
            "python -m tools.train): scored records carry no reasons",
            config.predict.explain,
            path,
        )
    return model


def model_of(
    config: JobConfig, path: str, card: dict[str, Any] | None, version: str, sha256: str = "", started_with: str = ""
) -> Model:
    """The model as the graph takes it, from its (checked) card: its trees for reasons, its drift
    reference, the challenger beside it and the folder of versions it may be replaced from."""
    named_set = model_check.feature_set(card)
    reference = card.get("drift_reference") if card is not None else None
    folder = config.predict.model_watch_dir
    return Model(
        version,
        sha256,
        named_set,
        tree_file(path, card),
        challenger(config, named_set),
        reference if isinstance(reference, dict) and drift.SCORE in reference else None,
        path,
        Watch(folder, config.predict.model_watch_seconds, started_with, named_set) if folder else None,
        card,
    )


def challenger(config: JobConfig, champion_set: str) -> Challenger | None:
    """predict.shadow_model, checked as the champion is. Its features must be the champion's, their
    first columns (fs-v1 beside fs-v2) or hold them as theirs (fs-v3 beside fs-v2): the job computes
    the longer vector and each model reads its first columns."""
    path = config.predict.shadow_model
    if path is None:
        return None
    card = model_check.check_model(path, "predict.shadow_model")
    named_set = model_check.feature_set(card)
    names, champion = feature_sets.names(named_set), feature_sets.names(champion_set)
    if champion[: len(names)] != names and names[: len(champion)] != champion:
        raise ConfigError(
            f"predict.shadow_model: {path} takes feature set {named_set}; neither it nor the champion's "
            f"({champion_set}) starts with the other's features, so no one vector serves both"
        )
    sha256 = card["sha256"].lower() if card is not None else file_digest(path)
    return Challenger(path, card_version(card, sha256), sha256, len(names), named_set)


def check_store(config: JobConfig) -> None:
    """Run each profile query once, with no key, before the job starts: a query the store refuses
    (no such table or column) stops the job with exit 2; a store that cannot be reached yet only
    warns (its records become PROFILE_STORE_UNAVAILABLE dead letters until it can)."""
    settings = config.enrich.store
    if settings is None:
        return
    store = profile_store.ProfileStore(settings)
    try:
        reason = store.check()
    except profile_store.StoreQueryError as exc:
        raise ConfigError(f"enrich.postgres: {exc}") from None
    finally:
        store.close()
    if reason is not None:
        logging.getLogger(__name__).warning("the profile store cannot be reached: %s", reason)


def model_version(config: JobConfig, card: dict[str, Any] | None, digest: str = "") -> str:
    """The version to stamp on scores: the configured one, the card's, or the file's sha256."""
    if config.predict.model_version:
        return config.predict.model_version
    if card is not None and card.get("model_version"):
        return str(card["model_version"])
    return card_version(card, digest or file_digest(config.predict.model))


def card_version(card: dict[str, Any] | None, digest: str) -> str:
    """A model's version: its card's, or its file's sha256 (a model without a card)."""
    if card is not None and card.get("model_version"):
        return str(card["model_version"])
    return "sha256:" + digest[:12]


def resolve_model_version(config: JobConfig) -> str:
    """The version to stamp on scores, without loading the model; fails when the card is not the
    model's or its feature set is not the job's."""
    card = model_check.read_model_card(config.predict.model)
    if card is not None:
        model_check.check_card(config.predict.model, card)
    return model_version(config, card)


def kafka_commit(config: JobConfig, runner: str) -> str:
    """kafka.commit as it applies on `runner`: auto is written where the workers run here (Prism,
    where pipeline.io.progress sees every record written), finalize elsewhere."""
    if config.kafka.commit != "auto":
        return config.kafka.commit
    return "written" if runners.runs_here(runner) else "finalize"


def tracks_progress(config: JobConfig, runner: str) -> bool:
    """A streaming run whose workers run in this process: its records are tracked from read to
    written (pipeline.io.progress), for the Kafka commit and for a restart."""
    return config.is_streaming and runners.runs_here(runner) and "://" not in config.output.dir


def kafka_read(config: JobConfig, expansion: JavaExpansion, runner: str, properties: dict[str, str]) -> kafka.KafkaRead:
    """What 00_source's Kafka read is asked for, on this runner, through this expansion service."""
    commit = kafka_commit(config, runner)
    if commit == "finalize" and runners.runs_here(runner):
        raise ConfigError(
            "kafka.commit finalize: Prism cannot run KafkaIO's commit on finalize (it needs stable input); "
            "use written (the default on Prism)"
        )
    if commit == "written" and not tracks_progress(config, runner):
        raise ConfigError(
            f"kafka.commit written: {runner}'s workers run elsewhere and their writes cannot be seen from "
            "here; use finalize (the default there), with the runner's checkpoints"
        )
    return kafka.KafkaRead(
        consumer_config=kafka_client.consumer_config(config.kafka, properties),
        topics=config.kafka.topics,
        start_read_time_ms=config.kafka.start_read_time_ms,
        commit_in_finalize=commit == "finalize",
        expansion_service=expansion.address,
        stop_file=expansion.stop_file,
        commit_in_bundles=commit == "bundle",
        read_round_ms=config.kafka.read_round_ms,
    )


def _outputs(config: JobConfig) -> tuple[tuple[str, str | None, str | None, str], ...]:
    """Each output of the job: (name, its Kafka topic, its BigQuery table, its folder); the
    topic or the table, where one is set, takes the place of the folder."""
    out = config.output.dir.rstrip("/")
    return (
        ("scored", config.kafka.scored_topic, config.bigquery.scored_table, f"{out}/scored/"),
        ("dead letters", config.kafka.dead_letter_topic, config.bigquery.dead_letter_table, f"{out}/dead_letters/"),
    )


def written_to(config: JobConfig) -> dict[str, str]:
    """Where each output of the run goes: a folder, a topic or a table."""
    places = {
        what: f"kafka topic {topic}" if topic else f"bigquery table {table}" if table else folder
        for what, topic, table, folder in _outputs(config)
    }
    if config.kafka.alerts_topic:
        places["alerts"] = f"kafka topic {config.kafka.alerts_topic}"
    if config.pubsub.alerts_topic:
        places["alerts (Pub/Sub)"] = config.pubsub.alerts_topic
    places["summary"] = f"{config.output.dir.rstrip('/')}/summary.json"
    if config.output.report:
        places["report"] = f"{config.output.dir.rstrip('/')}/{run_report.REPORT}"
    return places


def kafka_properties(config: JobConfig) -> dict[str, str]:
    """The Kafka client properties (a file and the environment), read once per run, for the read,
    every topic sink, the committer and the lag; {} for a job without Kafka."""
    return kafka_client.client_properties(config.kafka.properties_file) if config.uses_kafka else {}


# --- the run ----------------------------------------------------------------------------------------


def launch(
    options: PipelineOptions, config: JobConfig, config_file: str | None, test_pipeline: beam.Pipeline | None = None
) -> dict[str, Any]:
    """Run the job (or submit it), publish its output, return the summary. Raises ConfigError before
    anything is read or written, RunFailedError when the job did not finish (nothing is published)."""
    runner_name = runners.choose_runner(options, config.is_streaming, config.uses_kafka, config.source.kind)
    model = model_in_use(config)
    check_store(config)
    if runner_name in runners.SUBMIT_ONLY_RUNNERS:
        return submit(options, config, runner_name, model)
    read_from = {"watch": config.source.watch_dir, "files": os.path.dirname(config.input.transactions or "") or "."}
    protected = (
        *([read_from[config.source.kind] or ""] if config.source.kind in read_from else []),
        *(path for path in (config.reference.customers, config.reference.merchants) if path is not None),
        config.predict.model,
        *([config_file] if config_file else []),
    )
    folder = OutputFolder(config.output.dir, config.output.overwrite, protected, appending=config.is_streaming)
    staging = folder.prepare()

    def worker_lost(pids: list[int]) -> None:
        for pid in worker_processes(os.getpid()):  # the survivors would wait on a runner that is gone
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        folder.abandon()
        print(
            f"run failed: worker process {', '.join(map(str, pids))} ended while the job was running "
            f"(killed, or out of memory); nothing was published to {config.output.dir}",
            file=sys.stderr,
            flush=True,
        )
        os._exit(run_summary.EXIT_RUN_FAILED)

    drift_logged: set[str] = set()
    drift_seen: dict[str, Any] = {}
    started = time.monotonic()

    def finish(summary: dict[str, Any]) -> dict[str, Any]:
        summary["output_dir"] = config.output.dir
        summary["written_to"] = written_to(config)
        summary["model_version"] = model.version
        summary["feature_set"] = model.feature_set
        summary["explain"] = config.predict.explain if model.trees is not None else "none"
        if model.shadow is not None:
            summary["shadow"] = {"model_version": model.shadow.version, **summary.get("shadow", {"records": 0})}
        counts = summary.pop("drift_counts", {})
        if model.drift_reference is not None:
            summary["drift"] = report = drift.summarize(model.drift_reference, counts, config.predict.drift_threshold)
            if config.is_streaming:
                # the traffic since the previous summary (streaming.summary_interval_seconds): drift as it is now
                now = time.monotonic()
                recent = drift.since(drift_seen.get("counts", {}), counts)
                report["last_interval"] = {
                    "seconds": round(now - drift_seen.get("at", started), 1),
                    **drift.summarize(model.drift_reference, recent, config.predict.drift_threshold),
                }
                drift_seen.update(counts=counts, at=now)
            for name in report["flagged"]:
                if name not in drift_logged:  # once per name and run (a streaming summary refreshes)
                    drift_logged.add(name)
                    value = report["score_psi"] if name == drift.SCORE else report["feature_psi"][name]
                    logging.getLogger(__name__).warning(
                        "drift: %s has a population stability index of %.3f against model %s's reference "
                        "(threshold predict.drift_threshold %s, over %d records)",
                        name, value, model.version, report["threshold"], report["records"],
                    )  # fmt: skip
        summary["enrich_backend"] = config.enrich.backend
        if config.enrich.backend != "postgres":
            summary.pop("profile_store", None)
        summary["runner"] = runner_name
        summary["mode"] = "streaming" if config.is_streaming else "batch"
        summary["exit_code"] = run_summary.exit_code(summary)
        return summary

    examples = run_report.DeadLetterExamples(os.path.join(staging, "dead_letters"))
    history: list[dict[str, Any]] = []

    def write_summary(summary: dict[str, Any]) -> None:
        finished = finish(summary)
        if config.output.report:  # before summary.json, which is written last
            if config.is_streaming:
                history.append(run_report.history_point(finished, time.monotonic() - started, history))
            thresholds = (config.thresholds.version, config.thresholds.review, config.thresholds.decline)
            found = examples.update(finished["dead_letters_by_code"])
            page = run_report.render(finished, model.card, thresholds, found, history)
            folder.write_file(run_report.REPORT, page.encode())
        folder.write_summary(json.dumps(finished, indent=2, sort_keys=True).encode() + b"\n")

    expansion = kafka_expansion(config, runner_name)
    try:
        folder.retire_previous()
        drain.reset()
        resume = None
        properties = kafka_properties(config)
        if tracks_progress(config, runner_name):
            resume = restart_point(config, properties)
            progress.enable(staging)
        else:
            progress.disable()
        pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
        with expansion as java:
            if java is not None:
                drain.on_request(java.stop_reading)
            build_pipeline(
                pipeline,
                config.with_output_dir(staging),
                model,
                _run_parts(config, java, runner_name, properties, resume),
            )
            committer = (
                progress.KafkaCommitter(config.kafka.bootstrap_servers or "", config.kafka.group_id, properties)
                if config.source.kind == "kafka" and kafka_commit(config, runner_name) == "written"
                else contextlib.nullcontext()
            )
            # On Prism the workers run in this process: the summary counts what they counted
            # (pipeline.summary.worker_counts), not the runner's metrics.
            counted_here = metrics.live_counts if runners.runs_here(runner_name) else None
            tally = metrics.live() if counted_here is not None else contextlib.nullcontext()
            with committer, tally, monitor(config, model, runner_name, properties):
                result = _run_to_end(pipeline, config, properties, write_summary, worker_lost, counted_here)
                here = counted_here() if counted_here is not None else None
        summary = run_summary.summarize(result, here)
        if resume is not None:
            summary["restart"] = {**resume.describe(), "already_written_skipped": summary.pop("already_written", 0)}
        else:
            summary.pop("already_written", None)
        summary["source_error_details"] = run_summary.source_error_details(staging) if summary["source_errors"] else []
        summary["stage_msecs"] = run_summary.stage_msecs(result)
        if config.is_streaming:
            summary["running"] = False
            summary["stopped_by"] = drain.reason() or "idle"
        write_summary(summary)
        folder.publish()
    except KafkaSetupError as exc:
        folder.abandon()
        raise ConfigError(f"kafka: {exc}") from None
    except BaseException:
        folder.abandon()
        raise
    return summary


def monitor(config: JobConfig, model: Model, runner_name: str, properties: dict[str, str]) -> Any:
    """The run's metrics endpoint (run.metrics_port) and progress line (run.progress), with the
    live tally they read; nothing when neither is asked for."""
    show_progress = config.source.kind == "files" and progress_wanted(config.run.progress, config.is_streaming)
    if not config.run.metrics_port and not show_progress:
        return contextlib.nullcontext()
    lag = close = None
    if config.source.kind == "kafka" and config.run.metrics_port:
        group = kafka_client.GroupLag(config.kafka, properties)
        lag, close = (lambda: group.pending(progress.read_positions())), group.close
    facts = Facts(
        model.version,
        model.feature_set,
        model.shadow.version if model.shadow is not None else "",
        "streaming" if config.is_streaming else "batch",
        runner_name,
        model.drift_reference,
        lag,
        close,
    )
    line = None
    if show_progress:
        entries = [e for e in files.match_files(config.input.transactions or "") if isinstance(e, files.FileEntry)]
        uncompressed = [e for e in entries if not files.is_compressed(e.path)]
        total_bytes = sum(e.size for e in entries) if len(uncompressed) == len(entries) else 0
        line = ProgressLine(len(entries), total_bytes)
    return Monitor(facts, config.run.metrics_port, config.run.metrics_host, line)


def source_label(config: JobConfig) -> str:
    """Where the job's records come from, in words, for the graph's picture."""
    kind = config.source.kind
    if kind == "watch":
        return f"watched folder {config.source.watch_dir}"
    if kind == "kafka":
        return f"Kafka topic {', '.join(config.kafka.topics)}"
    if kind == "pubsub":
        return f"Pub/Sub {config.pubsub.subscription}"
    return f"files {config.input.transactions}"


def render_graph(options: PipelineOptions, config: JobConfig, path: str) -> str:
    """Builds the job for `config` as a run would (the model checked, Kafka expanded), runs
    nothing, and draws its graph to `path` (.svg with Graphviz, .dot as text); returns the DOT."""
    runner_name = runners.choose_runner(options, config.is_streaming, config.uses_kafka, config.source.kind)
    model = model_in_use(config)
    expansion = kafka_expansion(config, runner_name)
    try:
        with expansion as java:
            pipeline = beam.Pipeline(options=options)
            properties = kafka_properties(config)
            build_pipeline(pipeline, config, model, _run_parts(config, java, runner_name, properties))
    except KafkaSetupError as exc:
        raise ConfigError(f"kafka: {exc}") from None
    outputs = {
        what: picture.shown(where) for what, where in written_to(config).items() if what not in ("summary", "report")
    }
    dot = picture.dot_of(pipeline, picture.shown(source_label(config)), outputs)
    if path.endswith(".dot"):
        with open(path, "w", encoding="utf-8") as f:
            f.write(dot)
    else:
        picture.render_svg(dot, path)
    return dot


def kafka_expansion(config: JobConfig, runner_name: str) -> Any:
    """KafkaIO's expansion service for a job that reads or writes Kafka (nothing otherwise)."""
    if not config.uses_kafka:
        return contextlib.nullcontext()
    return JavaExpansion(config.kafka.expansion_service, local_worker=runners.runs_here(runner_name))


def _run_parts(
    config: JobConfig,
    java: JavaExpansion | None,
    runner_name: str,
    properties: dict[str, str],
    resume: progress.Resume | None = None,
) -> Run:
    read = None
    if config.source.kind == "kafka":
        assert java is not None, "a Kafka source needs the run's expansion service"
        read = kafka_read(config, java, runner_name, properties)
    # A run that tracks its progress (a streaming run here, into a local folder) keeps the
    # stateful stages' shards beside its outputs: this runner's state dies with the job.
    state_dir = os.path.join(config.output.dir, shard_files.FOLDER) if resume is not None else ""
    return Run(kafka_read=read, expansion=java, kafka_properties=properties, resume=resume, state_dir=state_dir)


def restart_point(config: JobConfig, properties: dict[str, str]) -> progress.Resume:
    """What an earlier streaming run of this output folder left (pipeline.io.progress), said in
    the log: a restart goes on from there, reading nothing it wrote again."""
    committed = None
    if config.source.kind == "kafka":
        with contextlib.closing(kafka_client.GroupLag(config.kafka, properties)) as lag:
            try:
                committed = lag.committed()
            except Exception as exc:  # noqa: BLE001 - no broker yet: every output file is read back
                logging.getLogger(__name__).warning("the group's committed offsets cannot be read: %s", exc)
    resume = progress.Resume.load(config.output.dir, committed)
    if not resume.fresh:
        facts = resume.describe()
        previous = facts["previous_run"]
        how = "finished" if facts["previous_run_finished"] else "did not finish (killed or crashed)"
        print(
            f"restart: an earlier run of {config.output.dir} {how}"
            + (f" (read {previous.get('read', 0):,}, scored {previous.get('scored', 0):,})" if previous else "")
            + f"; {facts['inputs_done']:,} input files done, {facts['output_files']:,} output files, "
            f"{facts['output_files_read_back']:,} read back, {facts['unfinished_window_files_removed']:,} unfinished "
            f"window files removed: {facts['positions_already_written']:,} records already written are skipped if "
            f"read again; 20_dedupe's and 35_velocity's memory goes on from {facts['state_files']:,} kept shard files",
            file=sys.stderr,
            flush=True,
        )
    return resume


def submit(options: PipelineOptions, config: JobConfig, runner_name: str, model: Model) -> dict[str, Any]:
    """Builds the job and submits it to a runner that runs it elsewhere (Dataflow); returns what
    was submitted. With --dry_run the job description is built and nothing is submitted."""
    to_files = [what for what, topic, table, _ in _outputs(config) if not (topic or table)]
    if to_files and "://" not in config.output.dir:
        raise ConfigError(
            f"output.dir: {runner_name}'s workers write the {' and '.join(to_files)} output and cannot reach "
            f"{config.output.dir!r} on this machine; give a gs:// folder (or BigQuery tables)"
        )
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, model, _run_parts(config, None, runner_name, kafka_properties(config)))
    try:
        result = pipeline.run()
    except Exception as exc:
        raise RunFailedError(f"{type(exc).__name__}: {str(exc)[:2000]}") from exc
    job = getattr(result, "job", None)
    read_id = getattr(result, "job_id", None)  # a submitted Dataflow job's; a dry run has none
    job_id = read_id() if callable(read_id) else ""
    return {
        "submitted": not options.view_as(TestOptions).dry_run,
        "runner": runner_name,
        "mode": "streaming" if config.is_streaming else "batch",
        "job_id": job_id,
        "job_name": job.proto.name if job is not None else "",
        "state": str(result.state),
        "model_version": model.version,
        "feature_set": model.feature_set,
        "output_dir": config.output.dir,
        # No summary.json: the job's figures are the service's (its console and metrics).
        "written_to": {what: where for what, where in written_to(config).items() if what != "summary"},
    }


def _run_to_end(
    pipeline: beam.Pipeline,
    config: JobConfig,
    properties: dict[str, str],
    write_summary,
    worker_lost,
    counted_here: Callable[[], dict[str, int]] | None = None,
) -> Any:
    """Runs the job until it finishes (a streaming one: until it drains); RunFailedError otherwise.
    `counted_here`: the workers' live tally (Prism), which the live summaries count from."""
    try:
        with WorkerWatchdog(worker_lost):
            if config.is_streaming:
                # Prism starts now and inherits an ignored SIGINT: a Ctrl-C in the terminal
                # reaches only this process, which drains the job instead of losing it.
                previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main_thread() else None
                try:
                    result = pipeline.run()
                finally:
                    if previous is not None:
                        signal.signal(signal.SIGINT, previous)
                # The watched folder stops itself when idle; a source read elsewhere (Kafka) is
                # stopped from here once its group's lag is nil and no record has come (counted
                # from now that the job runs).
                drain.saw_input()
                idle = config.streaming.stop_after_idle_seconds if config.source.kind == "kafka" else 0.0
                interval = config.streaming.summary_interval_seconds
                watch_lag = (
                    contextlib.closing(kafka_client.GroupLag(config.kafka, properties))
                    if idle
                    else contextlib.nullcontext()
                )
                with watch_lag as lag:
                    pending = (lambda: lag.pending(progress.read_positions())) if lag is not None else None
                    with StreamingWatch(result, interval, write_summary, idle, pending, counted_here):
                        result.wait_until_finish()
            else:
                result = pipeline.run()
                result.wait_until_finish()
    except Exception as exc:
        raise RunFailedError(f"{type(exc).__name__}: {str(exc)[:2000]}") from exc
    return result
