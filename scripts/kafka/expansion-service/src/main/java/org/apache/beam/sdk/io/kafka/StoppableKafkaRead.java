/*
 * KafkaIO's cross-language read with metadata (the rows of ReadFromKafka(with_metadata=True)),
 * with one addition: it stops reading, cleanly, once a named file exists.
 *
 * Beam's portable runners have no drain, and a streaming Kafka read never ends by itself. The
 * scoring job's local runs stop by idleness or on Ctrl-C: the job creates the stop file, every
 * partition's read ends at its current offset (KafkaIO's checkStopReadingFn), the watermark goes
 * to the end of time, every window and timer downstream fires, the last offsets are committed,
 * and the job finishes with nothing in flight. The file is only looked at on the machine of the
 * worker that reads, so the stop file is for local runs; on Flink and Dataflow the runner drains.
 *
 * With `commit_in_bundles`, the offsets read are committed to the consumer group at the end of
 * every read bundle (synchronously, from the worker that read them). KafkaIO's own commit
 * (commit_offset_in_finalize) needs a runner that provides stable input, which Prism does not; the
 * consumer's auto-commit would leave the last second of records uncommitted at a stop. Committed
 * offsets then mark what was read and handed on: after a clean stop a restart goes on exactly where
 * the last run stopped.
 *
 * With `event_time_watermark`, each record's timestamp and each partition's watermark follow the
 * records' own event time (the `event_time` field of the JSON value) instead of the clock that
 * reads them (EventTimePolicy): a backlog, a topic read from its start and a restart after downtime
 * are on time, and a record is late only when it is behind the records read before it.
 *
 * It lives in KafkaIO's package to reuse its package-private external builder: the payload is
 * KafkaIO.Read.External.Configuration's plus `stop_file`, `commit_in_bundles` and
 * `event_time_watermark`.
 */
package org.apache.beam.sdk.io.kafka;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.time.OffsetDateTime;
import java.time.format.DateTimeParseException;
import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.beam.sdk.transforms.windowing.BoundedWindow;
import org.joda.time.Instant;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.SerializableFunction;
import org.apache.kafka.clients.consumer.Consumer;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.beam.sdk.expansion.ExternalTransformRegistrar;
import org.apache.beam.sdk.transforms.ExternalTransformBuilder;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.values.PBegin;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.vendor.guava.v32_1_2_jre.com.google.common.collect.ImmutableMap;
import org.apache.kafka.common.TopicPartition;

public class StoppableKafkaRead implements ExternalTransformRegistrar {
  public static final String URN = "riskpipe:transform:kafka_read_with_metadata_until_stop_file:v1";

  @Override
  public Map<String, Class<? extends ExternalTransformBuilder<?, ?, ?>>> knownBuilders() {
    return ImmutableMap.of(URN, Builder.class);
  }

  /** KafkaIO's read configuration plus the stop file. */
  public static class Configuration extends KafkaIO.Read.External.Configuration {
    private String stopFile;
    private Boolean commitInBundles;
    private Boolean eventTimeWatermark;
    private Long readRoundMs;
    private Map<String, String> consumer;

    public void setReadRoundMs(Long readRoundMs) {
      this.readRoundMs = readRoundMs;
    }

    public void setEventTimeWatermark(Boolean eventTimeWatermark) {
      this.eventTimeWatermark = eventTimeWatermark;
    }

    public void setStopFile(String stopFile) {
      this.stopFile = stopFile;
    }

    public void setCommitInBundles(Boolean commitInBundles) {
      this.commitInBundles = commitInBundles;
    }

    @Override
    public void setConsumerConfig(Map<String, String> consumerConfig) {
      super.setConsumerConfig(consumerConfig);
      this.consumer = consumerConfig;
    }
  }

  /** Commits, at the end of each bundle, the offset after the last record of each partition. */
  public static class CommitEachBundle extends DoFn<Row, Void> {
    private final Map<String, String> consumerConfig;
    private transient KafkaConsumer<byte[], byte[]> consumer;
    private transient Map<TopicPartition, OffsetAndMetadata> next;

    public CommitEachBundle(Map<String, String> consumerConfig) {
      this.consumerConfig = consumerConfig;
    }

    @Setup
    public void setup() {
      Map<String, Object> config = new HashMap<>(consumerConfig);
      config.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
      consumer = new KafkaConsumer<>(config, new ByteArrayDeserializer(), new ByteArrayDeserializer());
    }

    @StartBundle
    public void startBundle() {
      next = new HashMap<>();
    }

    @ProcessElement
    public void processElement(@Element Row row) {
      TopicPartition partition = new TopicPartition(row.getString("topic"), row.getInt32("partition"));
      long after = row.getInt64("offset") + 1;
      OffsetAndMetadata seen = next.get(partition);
      if (seen == null || seen.offset() < after) {
        next.put(partition, new OffsetAndMetadata(after));
      }
    }

    @FinishBundle
    public void finishBundle() {
      if (!next.isEmpty()) {
        consumer.commitSync(next);
      }
    }

    @Teardown
    public void teardown() {
      if (consumer != null) {
        consumer.close();
      }
    }
  }

  /** The read, and the commit of what it read when asked. */
  static class ReadAndCommit extends PTransform<PBegin, PCollection<Row>> {
    private final PTransform<PBegin, PCollection<Row>> read;
    private final Map<String, String> commitConfig;

    ReadAndCommit(PTransform<PBegin, PCollection<Row>> read, Map<String, String> commitConfig) {
      this.read = read;
      this.commitConfig = commitConfig;
    }

    @Override
    public PCollection<Row> expand(PBegin input) {
      PCollection<Row> rows = input.apply("Read", read);
      if (commitConfig != null) {
        rows.apply("CommitEachBundle", ParDo.of(new CommitEachBundle(commitConfig)));
      }
      return rows;
    }
  }

  /**
   * Timestamps and watermark from the records' event time. A record's timestamp is its event_time,
   * or the partition's watermark where that is later (so the job sees how far behind it is); a
   * record without a readable event_time, or with one before 2000 or ahead of the wall clock, takes
   * the watermark and does not move it. The watermark
   * is the latest event time read. A partition with nothing to read (no backlog) moves on with the
   * wall clock, never past it: for its first CATCH_UP_AFTER_MS of quiet from its own latest event
   * time; after that (and a partition that has read nothing, at once) from the latest event time
   * that any partition of this worker had read CATCH_UP_AFTER_MS before. So a quiet partition does
   * not hold the job back, yesterday's records are not late, and a partition read a moment after
   * the others, or that has read all there is for a moment while the others are ahead of it in
   * event time (an archive fed again faster than it happened, a producer catching up), is not
   * moved past its own next records: KafkaIO's backlog of a partition is an estimate, 0 until its
   * end offset is fetched again.
   */
  public static class EventTimePolicy extends TimestampPolicy<byte[], byte[]> {
    private static final Pattern EVENT_TIME =
        Pattern.compile("\"event_time\"\\s*:\\s*\"([^\"]{1,64})\"");
    /** Per partition of this worker: {latest event time read (ms), wall clock when read (ms)}. */
    private static final Map<TopicPartition, long[]> LATEST = new ConcurrentHashMap<>();
    /** The contract's earliest event_time: a record before it is invalid and moves nothing. */
    private static final long YEAR_2000 = 946684800000L;
    /**
     * How long a partition that has read records is quiet before the others' event time moves it,
     * and how old the others' event time is that moves a quiet partition.
     */
    static final long CATCH_UP_AFTER_MS = 5000L;
    /**
     * The latest event time read by any partition of this worker, each time it moved in the last
     * CATCH_UP_AFTER_MS: {wall clock (ms), latest event time (ms)}, oldest first. Guarded by itself,
     * as is latestBefore: the newest such entry from before then (null: none).
     */
    private static final ArrayDeque<long[]> LATEST_OVER_TIME = new ArrayDeque<>();

    private static long[] latestBefore;

    private final TopicPartition partition;
    private Instant watermark;

    EventTimePolicy(TopicPartition partition, Optional<Instant> previousWatermark) {
      this.partition = partition;
      this.watermark = previousWatermark.orElse(BoundedWindow.TIMESTAMP_MIN_VALUE);
    }

    static Long eventTimeMillis(byte[] value) {
      if (value == null) {
        return null;
      }
      // The field is near the start of a transaction; a bounded look keeps huge values cheap.
      String text = new String(value, 0, Math.min(value.length, 4096), StandardCharsets.UTF_8);
      Matcher found = EVENT_TIME.matcher(text);
      if (!found.find()) {
        return null;
      }
      try {
        return OffsetDateTime.parse(found.group(1)).toInstant().toEpochMilli();
      } catch (DateTimeParseException e) {
        return null;
      }
    }

    @Override
    public Instant getTimestampForRecord(PartitionContext context, KafkaRecord<byte[], byte[]> record) {
      Long event = eventTimeMillis(record.getKV().getValue());
      long now = System.currentTimeMillis();
      if (event == null || event < YEAR_2000 || event > now) {
        // No readable event time, one before 2000 (invalid) or one ahead of the wall clock (the job
        // refuses it beyond the allowed skew): it moves nothing, or one bad record would make the
        // records behind it late. It needs a time that is not behind the job, nothing more.
        return watermark.isAfter(BoundedWindow.TIMESTAMP_MIN_VALUE) ? watermark : new Instant(record.getTimestamp());
      }
      LATEST.merge(partition, new long[] {event, now}, (a, b) -> a[0] >= b[0] ? new long[] {a[0], now} : b);
      latestMoved(now, event);
      Instant at = new Instant(event);
      if (at.isAfter(watermark)) {
        watermark = at;
        return at;
      }
      return watermark;
    }

    /** Records that the latest event time read by any partition may have moved to `event`. */
    private static void latestMoved(long now, long event) {
      synchronized (LATEST_OVER_TIME) {
        long[] newest = LATEST_OVER_TIME.isEmpty() ? latestBefore : LATEST_OVER_TIME.peekLast();
        if (newest == null || event > newest[1]) {
          LATEST_OVER_TIME.addLast(new long[] {now, event});
        }
        latestAsOf(now - CATCH_UP_AFTER_MS); // forgets what is no longer needed
      }
    }

    /**
     * {wall clock when read (ms), event time (ms)} of the latest event time any partition of this
     * worker had read at wall clock `when`; null when none had read any.
     */
    static long[] latestAsOf(long when) {
      synchronized (LATEST_OVER_TIME) {
        while (!LATEST_OVER_TIME.isEmpty() && LATEST_OVER_TIME.peekFirst()[0] <= when) {
          latestBefore = LATEST_OVER_TIME.pollFirst();
        }
        return latestBefore;
      }
    }

    @Override
    public Instant getWatermark(PartitionContext context) {
      if (context.getMessageBacklog() == 0) {
        long now = System.currentTimeMillis();
        long[] own = LATEST.get(partition);
        // An event time moved on with the wall clock since it was read: the partition's own when
        // it has been quiet for a moment only (a read round that found nothing more yet), else the
        // others'. A partition without records must not hold the watermark at the others' latest
        // event time, or a lone record would wait for the next one (runners such as Prism give
        // a stateful stage its records only as the watermark moves).
        long[] from =
            own != null && now - own[1] < CATCH_UP_AFTER_MS
                ? new long[] {own[1], own[0]}
                : latestAsOf(now - CATCH_UP_AFTER_MS);
        if (from != null) {
          Instant idle = new Instant(Math.min(now, from[1] + Math.max(0, now - from[0])));
          if (idle.isAfter(watermark)) {
            watermark = idle;
          }
        }
      }
      return watermark;
    }
  }

  public static class EventTimePolicyFactory implements TimestampPolicyFactory<byte[], byte[]> {
    @Override
    public TimestampPolicy<byte[], byte[]> createTimestampPolicy(
        TopicPartition partition, Optional<Instant> previousWatermark) {
      return new EventTimePolicy(partition, previousWatermark);
    }
  }

  /** True for every partition once the file exists. */
  public static class StopWhenFileExists implements CheckStopReadingFn {
    private final String path;

    public StopWhenFileExists(String path) {
      this.path = path;
    }

    @Override
    public Boolean apply(TopicPartition partition) {
      return Files.exists(Paths.get(path));
    }
  }

  public static class Builder
      implements ExternalTransformBuilder<Configuration, PBegin, PCollection<Row>> {
    @Override
    public PTransform<PBegin, PCollection<Row>> buildExternal(Configuration config) {
      KafkaIO.Read.Builder<byte[], byte[]> read = new AutoValue_KafkaIO_Read.Builder<>();
      KafkaIO.Read.Builder.setupExternalBuilder(read, config);
      if (config.stopFile != null && !config.stopFile.isEmpty()) {
        read.setCheckStopReadingFn(new StopWhenFileExists(config.stopFile));
      }
      if (Boolean.TRUE.equals(config.eventTimeWatermark)) {
        read.setTimestampPolicyFactory(new EventTimePolicyFactory());
      }
      if (config.readRoundMs != null && config.readRoundMs > 0) {
        long round = config.readRoundMs;
        read.setConsumerFactoryFn(
            (SerializableFunction<Map<String, Object>, Consumer<byte[], byte[]>>)
                consumerConfig -> new BoundedPollConsumer(consumerConfig, round));
      }
      PTransform<PBegin, PCollection<Row>> rows = read.build().externalWithMetadata();
      boolean commit = Boolean.TRUE.equals(config.commitInBundles);
      if (commit && (config.consumer == null || !config.consumer.containsKey("group.id"))) {
        throw new IllegalArgumentException("commit_in_bundles needs group.id in the consumer config");
      }
      return new ReadAndCommit(rows, commit ? config.consumer : null);
    }
  }
}
