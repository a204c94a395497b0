package onceflow.bench;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.util.Properties;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeHint;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerRecord;

/**
 * Flink contender: a local mini cluster in this JVM running KafkaSource ->
 * copy or keyed running word count -> KafkaSink at EXACTLY_ONCE, with
 * checkpoints every interval (aligned, heap state, checkpoints in files).
 *
 * <p>Arguments: bootstrap job(copy|wordcount) inputTopic outputTopic
 * transactionalIdPrefix checkpointIntervalMs parallelism checkpointDir
 * [stateBackend restPort]. Runs until killed; a new start resumes from the
 * newest retained checkpoint in checkpointDir. With stateBackend "rocksdb"
 * the keyed state lives in RocksDB (its files under checkpointDir/../rocksdb)
 * with incremental checkpoints, for the large-state comparison (compare
 * -state); restPort is the mini cluster's REST port (the harness reads
 * /jobs/(id)/checkpoints there), 0 for Flink's default.
 */
public final class FlinkBench {
    public static void main(String[] args) throws Exception {
        if (args.length != 8 && args.length != 10) {
            System.err.println("usage: FlinkBench bootstrap copy|wordcount in out prefix intervalMs parallelism checkpointDir [heap|rocksdb restPort]");
            System.exit(2);
        }
        String bootstrap = args[0], job = args[1], in = args[2], out = args[3], prefix = args[4];
        long intervalMs = Long.parseLong(args[5]);
        int parallelism = Integer.parseInt(args[6]);
        File checkpoints = new File(args[7]);

        // Checkpoints go to files and are kept when the process dies, and a
        // start resumes from the newest one, so that a killed process can
        // be restarted like a failed-over job.
        Configuration conf = new Configuration();
        conf.setString("execution.checkpointing.dir", checkpoints.toURI().toString());
        conf.setString("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION");
        conf.setString("execution.checkpointing.num-retained", "2");
        if (args.length == 10) {
            if (args[8].equals("rocksdb")) {
                conf.setString("state.backend.type", "rocksdb");
                conf.setString("execution.checkpointing.incremental", "true");
                conf.setString("state.backend.rocksdb.localdir",
                        new File(checkpoints.getAbsoluteFile().getParentFile(), "rocksdb").getAbsolutePath());
            } else if (!args[8].equals("heap")) {
                System.err.println("unknown state backend " + args[8]);
                System.exit(2);
            }
            if (!args[9].equals("0")) {
                conf.setString("rest.bind-address", "127.0.0.1");
                conf.setString("rest.address", "127.0.0.1");
                conf.setString("rest.port", args[9]);
                // Checkpoint statistics as they are, not as of 3 s ago.
                conf.setString("rest.cache.checkpoint-statistics.timeout", "100 ms");
            }
        }
        File latest = latestCheckpoint(checkpoints);
        if (latest != null) {
            System.err.println("resuming from " + latest);
            conf.setString("execution.state-recovery.path", latest.toURI().toString());
        }
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(parallelism, conf);
        env.enableCheckpointing(intervalMs, CheckpointingMode.EXACTLY_ONCE);
        // Records are handed on, not copied, between chained operators (a
        // record without a key has a null byte array, which the copy
        // rejects), as tuned jobs do.
        env.getConfig().enableObjectReuse();

        KafkaSource<Tuple2<byte[], byte[]>> source = KafkaSource.<Tuple2<byte[], byte[]>>builder()
                .setBootstrapServers(bootstrap)
                .setTopics(in)
                .setGroupId(prefix)
                .setStartingOffsets(OffsetsInitializer.earliest())
                .setDeserializer(new KeyValue())
                .build();
        DataStream<Tuple2<byte[], byte[]>> records =
                env.fromSource(source, WatermarkStrategy.noWatermarks(), "kafka-in");

        Properties producer = new Properties();
        // Below the broker's transaction.max.timeout.ms (15 min).
        producer.setProperty("transaction.timeout.ms", "600000");

        switch (job) {
            case "copy":
                records.sinkTo(sink(bootstrap, prefix, producer, out));
                break;
            case "wordcount":
                records.flatMap((Tuple2<byte[], byte[]> r, Collector<String> c) -> {
                            if (r.f1 == null) {
                                return;
                            }
                            for (String w : new String(r.f1, StandardCharsets.UTF_8).trim().split("\\s+")) {
                                if (!w.isEmpty()) {
                                    c.collect(w);
                                }
                            }
                        }).returns(Types.STRING)
                        .keyBy(w -> w)
                        .process(new Count())
                        .sinkTo(sink(bootstrap, prefix, producer, out));
                break;
            default:
                System.err.println("unknown job " + job);
                System.exit(2);
        }
        env.execute("onceflow-bench-" + job);
    }

    /** The newest chk-N folder with a _metadata file under dir/(job id)/. */
    static File latestCheckpoint(File dir) {
        File best = null;
        File[] jobs = dir.listFiles(File::isDirectory);
        if (jobs == null) {
            return null;
        }
        for (File job : jobs) {
            File[] chks = job.listFiles(f -> f.getName().startsWith("chk-") && new File(f, "_metadata").isFile());
            if (chks == null) {
                continue;
            }
            for (File c : chks) {
                if (best == null || new File(c, "_metadata").lastModified() > new File(best, "_metadata").lastModified()) {
                    best = c;
                }
            }
        }
        return best;
    }

    static KafkaSink<Tuple2<byte[], byte[]>> sink(String bootstrap, String prefix, Properties producer, String out) {
        return KafkaSink.<Tuple2<byte[], byte[]>>builder()
                .setBootstrapServers(bootstrap)
                .setKafkaProducerConfig(producer)
                .setDeliveryGuarantee(DeliveryGuarantee.EXACTLY_ONCE)
                .setTransactionalIdPrefix(prefix)
                .setRecordSerializer((KafkaRecordSerializationSchema<Tuple2<byte[], byte[]>>) (r, ctx, ts) ->
                        new ProducerRecord<>(out, r.f0, r.f1))
                .build();
    }

    /** Key and value bytes of a Kafka record. */
    static final class KeyValue implements KafkaRecordDeserializationSchema<Tuple2<byte[], byte[]>> {
        @Override
        public void deserialize(ConsumerRecord<byte[], byte[]> r, Collector<Tuple2<byte[], byte[]>> out) {
            out.collect(Tuple2.of(r.key(), r.value()));
        }

        @Override
        public TypeInformation<Tuple2<byte[], byte[]>> getProducedType() {
            return TypeInformation.of(new TypeHint<Tuple2<byte[], byte[]>>() {});
        }
    }

    /** Running count per word: emits (word, count after this occurrence). */
    static final class Count extends KeyedProcessFunction<String, String, Tuple2<byte[], byte[]>> {
        private transient ValueState<Long> count;

        @Override
        public void open(org.apache.flink.api.common.functions.OpenContext ctx) {
            count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
        }

        @Override
        public void processElement(String w, Context ctx, Collector<Tuple2<byte[], byte[]>> out) throws Exception {
            Long n = count.value();
            long next = n == null ? 1 : n + 1;
            count.update(next);
            out.collect(Tuple2.of(w.getBytes(StandardCharsets.UTF_8),
                    Long.toString(next).getBytes(StandardCharsets.UTF_8)));
        }
    }
}
