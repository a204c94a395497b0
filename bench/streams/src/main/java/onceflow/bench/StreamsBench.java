package onceflow.bench;

import java.time.Duration;
import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Kafka Streams contender: exactly_once_v2 copy or running word count.
 *
 * <p>Arguments: bootstrap job(copy|wordcount) inputTopic outputTopic
 * applicationId commitIntervalMs stateDir threads. Runs until SIGTERM.
 *
 * <p>The record cache is off so that the word count emits every update
 * (key = word, value = running count), the same output as the other
 * contenders; the groupBy goes through a repartition topic, as every Kafka
 * Streams aggregation on a re-keyed stream does.
 */
public final class StreamsBench {
    public static void main(String[] args) throws Exception {
        if (args.length != 8) {
            System.err.println("usage: StreamsBench bootstrap copy|wordcount in out appId commitIntervalMs stateDir threads");
            System.exit(2);
        }
        String bootstrap = args[0], job = args[1], in = args[2], out = args[3], appId = args[4];
        long intervalMs = Long.parseLong(args[5]);
        String stateDir = args[6];
        int threads = Integer.parseInt(args[7]);

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, intervalMs);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0L);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, -1);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        // The harness kills and restarts contenders: static membership lets
        // the restarted instance take its tasks back without a rebalance,
        // and a short session bounds the wait otherwise.
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG), appId + "-member");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 6000);
        p.put(StreamsConfig.producerPrefix(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG), 60000);

        StreamsBuilder b = new StreamsBuilder();
        switch (job) {
            case "copy":
                b.stream(in, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                        .to(out, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
                break;
            case "wordcount":
                b.stream(in, Consumed.with(Serdes.ByteArray(), Serdes.String()))
                        .flatMapValues(line -> Arrays.asList(line.trim().split("\\s+")))
                        .filter((k, w) -> !w.isEmpty())
                        .groupBy((k, w) -> w, Grouped.with(Serdes.String(), Serdes.String()))
                        .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("counts"))
                        .toStream()
                        .mapValues(n -> Long.toString(n))
                        .to(out, Produced.with(Serdes.String(), Serdes.String()));
                break;
            default:
                System.err.println("unknown job " + job);
                System.exit(2);
        }

        KafkaStreams streams = new KafkaStreams(b.build(), p);
        CountDownLatch done = new CountDownLatch(1);
        streams.setUncaughtExceptionHandler(e -> {
            e.printStackTrace();
            done.countDown();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(20));
            done.countDown();
        }));
        streams.start();
        done.await();
    }
}
