// Readiness probe for scripts/kafka: succeeds once a real client can create a topic on the broker.
// Run as a single-file source program against Kafka's own client jars, so it needs no build step.
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.errors.TopicExistsException;

public class Ready {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "10000");
        long deadline = System.currentTimeMillis() + 60_000;
        Exception last = null;
        try (Admin admin = Admin.create(props)) {
            while (System.currentTimeMillis() < deadline) {
                try {
                    admin.createTopics(List.of(new NewTopic("__eddy_ready", 1, (short) 1))).all().get();
                    return;
                } catch (Exception e) {
                    if (e.getCause() instanceof TopicExistsException) return;
                    last = e;
                    Thread.sleep(250);
                }
            }
        }
        System.err.println("broker at " + args[0] + " did not accept a topic creation within 60s: " + last);
        System.exit(1);
    }
}
