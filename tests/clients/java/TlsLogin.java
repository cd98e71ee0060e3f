// MariaDB Connector/J through baton with TLS: verifies baton's certificate
// against the CA given (serverSslCert), then prints the user and the backend
// leg's TLS version in brackets (empty when that leg is plaintext). Usage: java -cp mariadb-java-client.jar:. TlsLogin PORT CA_PEM
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;

public class TlsLogin {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:mariadb://127.0.0.1:" + args[0] + "/baton_test?user=app&password=app&useSsl=true&serverSslCert=" + args[1];
        try (Connection c = DriverManager.getConnection(url); Statement s = c.createStatement()) {
            ResultSet r = s.executeQuery("SELECT CURRENT_USER(), VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_version'");
            r.next();
            System.out.println(r.getString(1) + " [" + r.getString(2) + "]");
        } catch (java.sql.SQLException e) {
            System.out.println("ERROR " + e.getErrorCode());
        }
    }
}
