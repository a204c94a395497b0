package onceflow.bench;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Properties;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.typeinfo.TypeHint;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.KeyedStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.EventTimeSessionWindows;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * Flink's windowed contender (bench/cmd/compare -windows, issue 17): the
 * closest equivalents of Nexmark q5 and q11 that onceflow's window job
 * computes. KafkaSource of JSON bids -> event time from the "ts" field with
 * bounded out-of-orderness watermarks -> keyBy the query's field ->
 * event-time windows (q5: sliding 10 s every 2 s, key auction; q11: sessions
 * with a 10 s gap, key bidder) -> incremental count -> one
 * {"key","start","end","value"} record per window -> KafkaSink
 * EXACTLY_ONCE, with aligned checkpoints every interval (heap state,
 * checkpoints in files, as FlinkBench).
 *
 * <p>Arguments: bootstrap query(q5|q11) inputTopic outputTopic
 * transactionalIdPrefix checkpointIntervalMs parallelism workDir boundMs.
 * Runs until killed.
 */
public final class FlinkWindows {
    public static void main(String[] args) throws Exception {
        if (args.length != 9) {
            System.err.println("usage: FlinkWindows bootstrap q5|q11 in out prefix intervalMs parallelism workDir boundMs");
            System.exit(2);
        }
        String bootstrap = args[0], query = args[1], in = args[2], out = args[3], prefix = args[4];
        long intervalMs = Long.parseLong(args[5]);
        int parallelism = Integer.parseInt(args[6]);
        File checkpoints = new File(args[7], "checkpoints");
        long boundMs = Long.parseLong(args[8]);
        String field;
        switch (query) {
            case "q5":
                field = "auction";
                break;
            case "q11":
                field = "bidder";
                break;
            default:
                System.err.println("unknown query " + query);
                System.exit(2);
                return;
        }

        Configuration conf = new Configuration();
        conf.setString("execution.checkpointing.dir", checkpoints.toURI().toString());
        conf.setString("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION");
        conf.setString("execution.checkpointing.num-retained", "2");
        File latest = FlinkBench.latestCheckpoint(checkpoints);
        if (latest != null) {
            System.err.println("resuming from " + latest);
            conf.setString("execution.state-recovery.path", latest.toURI().toString());
        }
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(parallelism, conf);
        env.enableCheckpointing(intervalMs, CheckpointingMode.EXACTLY_ONCE);
        env.getConfig().enableObjectReuse();

        KafkaSource<Tuple2<String, Long>> source = KafkaSource.<Tuple2<String, Long>>builder()
                .setBootstrapServers(bootstrap)
                .setTopics(in)
                .setGroupId(prefix)
                .setStartingOffsets(OffsetsInitializer.earliest())
                .setDeserializer(new KeyAndTime(field))
                .build();
        // Per-split watermarks (Kafka partitions), newest timestamp - bound
        // - 1 ms, as onceflow's max_out_of_orderness.
        WatermarkStrategy<Tuple2<String, Long>> wm = WatermarkStrategy
                .<Tuple2<String, Long>>forBoundedOutOfOrderness(Duration.ofMillis(boundMs))
                .withTimestampAssigner((b, t) -> b.f1);
        DataStream<Tuple2<String, Long>> bids = env.fromSource(source, wm, "kafka-in");
        KeyedStream<Tuple2<String, Long>, String> keyed = bids.keyBy(b -> b.f0);
        DataStream<Tuple2<byte[], byte[]>> results;
        if (query.equals("q5")) {
            results = keyed.window(SlidingEventTimeWindows.of(Duration.ofSeconds(10), Duration.ofSeconds(2)))
                    .aggregate(new Count(), new ToJson());
        } else {
            results = keyed.window(EventTimeSessionWindows.withGap(Duration.ofSeconds(10)))
                    .aggregate(new Count(), new ToJson());
        }
        Properties producer = new Properties();
        producer.setProperty("transaction.timeout.ms", "600000");
        results.sinkTo(FlinkBench.sink(bootstrap, prefix, producer, out));
        env.execute("onceflow-bench-windows-" + query);
    }

    /** The grouping field and the "ts" field of a JSON bid. */
    static final class KeyAndTime implements KafkaRecordDeserializationSchema<Tuple2<String, Long>> {
        private final String field;

        KeyAndTime(String field) {
            this.field = field;
        }

        @Override
        public void deserialize(ConsumerRecord<byte[], byte[]> r, Collector<Tuple2<String, Long>> out) {
            String v = new String(r.value(), StandardCharsets.UTF_8);
            out.collect(Tuple2.of(Json.field(v, field), Long.parseLong(Json.field(v, "ts"))));
        }

        @Override
        public TypeInformation<Tuple2<String, Long>> getProducedType() {
            return TypeInformation.of(new TypeHint<Tuple2<String, Long>>() {});
        }
    }

    /** A window's bid count, kept incrementally (one long per window). */
    static final class Count implements AggregateFunction<Tuple2<String, Long>, Long, Long> {
        @Override
        public Long createAccumulator() {
            return 0L;
        }

        @Override
        public Long add(Tuple2<String, Long> b, Long acc) {
            return acc + 1;
        }

        @Override
        public Long getResult(Long acc) {
            return acc;
        }

        @Override
        public Long merge(Long a, Long b) {
            return a + b;
        }
    }

    /** One result record: key the group's key, value {"key","start","end","value"}. */
    static final class ToJson extends ProcessWindowFunction<Long, Tuple2<byte[], byte[]>, String, TimeWindow> {
        @Override
        public void process(String key, Context ctx, Iterable<Long> counts, Collector<Tuple2<byte[], byte[]>> out) {
            long n = counts.iterator().next();
            TimeWindow w = ctx.window();
            out.collect(Tuple2.of(key.getBytes(StandardCharsets.UTF_8),
                    Json.result(key, w.getStart(), w.getEnd(), n).getBytes(StandardCharsets.UTF_8)));
        }
    }
}
