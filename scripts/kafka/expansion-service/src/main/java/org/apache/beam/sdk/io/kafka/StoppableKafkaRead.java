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
 * It lives in KafkaIO's package to reuse its package-private external builder: the payload is
 * KafkaIO.Read.External.Configuration's plus `stop_file`.
 */
package org.apache.beam.sdk.io.kafka;

import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Map;
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

    public void setStopFile(String stopFile) {
      this.stopFile = stopFile;
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
      return read.build().externalWithMetadata();
    }
  }
}
