// A small Flink job that `deploy/flink/cluster.sh check` runs on the cluster. It shows that the
// TaskManager's slots run tasks and that a job reaches FINISHED, without Beam's job server: it
// sums a sequence at the given parallelism and fails unless the sum is right.
import org.apache.flink.api.common.RuntimeExecutionMode;
import org.apache.flink.api.common.functions.ReduceFunction;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.util.CloseableIterator;

public class ClusterCheck {
  public static void main(String[] args) throws Exception {
    long n = args.length > 0 ? Long.parseLong(args[0]) : 100_000L;
    StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
    env.setRuntimeMode(RuntimeExecutionMode.BATCH);
    ReduceFunction<Long> sum = (a, b) -> a + b;
    long total = 0;
    try (CloseableIterator<Long> result =
        env.fromSequence(1, n).map(x -> x * 2).returns(Long.class).keyBy(x -> x % 8).reduce(sum)
            .keyBy(x -> 0).reduce(sum).executeAndCollect("riskpipe-cluster-check")) {
      while (result.hasNext()) {
        total = result.next();
      }
    }
    long expected = n * (n + 1);
    if (total != expected) {
      throw new IllegalStateException("sum " + total + ", expected " + expected);
    }
    System.out.println("riskpipe-cluster-check: sum of 2x over 1.." + n + " = " + total);
  }
}
