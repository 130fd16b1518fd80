// ACLs on the test broker, through Kafka's own Admin API (the broker runs the KRaft
// StandardAuthorizer). Run as a single-file source program against Kafka's client jars.
//
//   Acl BOOTSTRAP allow-all PRINCIPAL                     every operation on every topic, group, transactional id and the cluster
//   Acl BOOTSTRAP deny PRINCIPAL OPERATION TYPE NAME      e.g. deny User:eddy WRITE TOPIC clicks-out
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class Acl {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        List<AclBinding> acls = new ArrayList<>();
        String principal = args[2];
        if (args[1].equals("allow-all")) {
            for (ResourceType type : List.of(ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID)) {
                acls.add(binding(type, "*", principal, AclOperation.ALL, AclPermissionType.ALLOW));
            }
            acls.add(binding(ResourceType.CLUSTER, "kafka-cluster", principal, AclOperation.ALL, AclPermissionType.ALLOW));
        } else if (args[1].equals("deny")) {
            acls.add(binding(ResourceType.fromString(args[4]), args[5], principal,
                AclOperation.fromString(args[3]), AclPermissionType.DENY));
        } else {
            throw new IllegalArgumentException("usage: Acl BOOTSTRAP allow-all PRINCIPAL | deny PRINCIPAL OPERATION TYPE NAME");
        }
        try (Admin admin = Admin.create(props)) {
            admin.createAcls(acls).all().get();
        }
    }

    static AclBinding binding(ResourceType type, String name, String principal, AclOperation operation, AclPermissionType permission) {
        return new AclBinding(new ResourcePattern(type, name, PatternType.LITERAL),
            new AccessControlEntry(principal, "*", operation, permission));
    }
}
