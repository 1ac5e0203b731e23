/*
 * A Kafka consumer for KafkaIO's read whose read of a partition ends after a short round.
 *
 * KafkaIO's ReadFromKafkaDoFn (Beam 2.73) seeks a partition, then polls it until its polling
 * timeout (at least one second) is spent or a poll comes back empty, and hands its records on only
 * when the bundle ends. A runner that runs a stage's partitions one after another in one bundle
 * (Prism) then holds every record for about partitions x 1 s. This consumer starts a round at
 * each seek (the start of a partition's read) and, once the round is `roundMillis` old, answers a
 * poll with no records, which ends the partition's read (KafkaIO resumes it in the next bundle
 * from where it stopped: nothing is skipped or read twice). Each poll waits at most what is left
 * of the round.
 */
package org.apache.beam.sdk.io.kafka;

import java.time.Duration;
import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;

public class BoundedPollConsumer extends KafkaConsumer<byte[], byte[]> {
  private final long roundMillis;
  private long roundStarted = System.currentTimeMillis();

  public BoundedPollConsumer(Map<String, Object> config, long roundMillis) {
    super(config);
    this.roundMillis = roundMillis;
  }

  @Override
  public void seek(TopicPartition partition, long offset) {
    roundStarted = System.currentTimeMillis();
    super.seek(partition, offset);
  }

  @Override
  public ConsumerRecords<byte[], byte[]> poll(Duration timeout) {
    long left = roundMillis - (System.currentTimeMillis() - roundStarted);
    if (left <= 0) {
      return ConsumerRecords.empty();
    }
    return super.poll(timeout.compareTo(Duration.ofMillis(left)) < 0 ? timeout : Duration.ofMillis(left));
  }
}
