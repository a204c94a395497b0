package onceflow.bench;

import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KGroupedStream;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.SessionWindows;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.processor.TimestampExtractor;

/**
 * Kafka Streams' windowed contender (bench/cmd/compare -windows, issue 17):
 * the closest equivalents of Nexmark q5 and q11 that onceflow's window job
 * computes. The input is keyed by the query's field (auction for q5, bidder
 * for q11), so the count groups by key without a repartition topic; event
 * time is the JSON "ts" field; q5 counts in hopping windows of 10 s every
 * 2 s, q11 in session windows with a 10 s inactivity gap, both with a grace
 * period of the bound, and suppress(untilWindowCloses) emits each window's
 * final count once. exactly_once_v2, commit.interval.ms the interval.
 *
 * <p>Results: key the group's key, value {"key","start","end","value"}; a
 * session's end is written as its last record + the gap, as Flink's and
 * onceflow's session windows end.
 *
 * <p>Arguments: bootstrap query(q5|q11) inputTopic outputTopic applicationId
 * commitIntervalMs threads workDir boundMs. Runs until SIGTERM.
 */
public final class StreamsWindows {
    public static void main(String[] args) throws Exception {
        if (args.length != 9) {
            System.err.println("usage: StreamsWindows bootstrap q5|q11 in out appId commitIntervalMs threads workDir boundMs");
            System.exit(2);
        }
        String bootstrap = args[0], query = args[1], in = args[2], out = args[3], appId = args[4];
        long intervalMs = Long.parseLong(args[5]);
        int threads = Integer.parseInt(args[6]);
        String stateDir = args[7] + "/state";
        Duration bound = Duration.ofMillis(Long.parseLong(args[8]));

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, intervalMs);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, -1);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG), appId + "-member");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 6000);
        p.put(StreamsConfig.producerPrefix(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG), 60000);

        TimestampExtractor ts = (rec, prev) -> Long.parseLong(Json.field((String) rec.value(), "ts"));
        StreamsBuilder b = new StreamsBuilder();
        KGroupedStream<String, String> grouped = b.stream(in,
                        Consumed.with(Serdes.String(), Serdes.String()).withTimestampExtractor(ts))
                .groupByKey();
        KStream<Windowed<String>, Long> finals;
        long endExtra;
        switch (query) {
            case "q5":
                finals = grouped.windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofSeconds(10), bound).advanceBy(Duration.ofSeconds(2)))
                        .count()
                        .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
                        .toStream();
                endExtra = 0;
                break;
            case "q11":
                finals = grouped.windowedBy(SessionWindows.ofInactivityGapAndGrace(Duration.ofSeconds(10), bound))
                        .count()
                        .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
                        .toStream();
                endExtra = Duration.ofSeconds(10).toMillis();
                break;
            default:
                System.err.println("unknown query " + query);
                System.exit(2);
                return;
        }
        finals.filter((w, n) -> n != null)
                .map((w, n) -> KeyValue.pair(w.key(), Json.result(w.key(), w.window().start(), w.window().end() + endExtra, n)))
                .to(out, Produced.with(Serdes.String(), Serdes.String()));

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
