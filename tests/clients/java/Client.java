// The MariaDB Connector/J driver program of the client matrix (tests/clients/run.py
// speaks to it; protocol at the top of run.py). JDBC with the driver's defaults
// (client-side prepared statements), and again with useServerPrepStmts=true (and
// useBulkStmts=true: COM_STMT_BULK_EXECUTE for executeBatch) for the
// prepared cases; the driver's pool (MariaDbPoolDataSource); Statement.setQueryTimeout.
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.sql.*;
import java.util.*;

public class Client {
    static final Map<String, String> E = System.getenv();
    static final String NAME = E.getOrDefault("CL_NAME", "connectorj");
    static final PrintStream OUT = new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);

    static String url(String target, String extra) {
        String port = E.get(target.equals("direct") ? "CL_DIRECT_PORT" : "CL_BATON_PORT");
        return "jdbc:mariadb://" + E.get("CL_HOST") + ":" + port + "/" + E.get("CL_DB") + "?user=" + E.get("CL_USER") + "&password=" + E.get("CL_PASSWORD") + extra;
    }

    static Connection connect(String target, String extra) throws SQLException {
        return DriverManager.getConnection(url(target, extra));
    }

    // JSON: strings, numbers, null, lists and maps are enough.
    static String json(Object o) {
        if (o == null) return "null";
        if (o instanceof Number || o instanceof Boolean) return o.toString();
        if (o instanceof Map) {
            StringJoiner j = new StringJoiner(", ", "{", "}");
            for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) j.add(json(e.getKey().toString()) + ": " + json(e.getValue()));
            return j.toString();
        }
        if (o instanceof List) {
            StringJoiner j = new StringJoiner(", ", "[", "]");
            for (Object x : (List<?>) o) j.add(json(x));
            return j.toString();
        }
        StringBuilder b = new StringBuilder("\"");
        for (char c : o.toString().toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    static Map<String, Object> map(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) m.put((String) kv[i], kv[i + 1]);
        return m;
    }

    static void out(Object... kv) {
        OUT.println(json(map(kv)));
    }

    static Object value(Object v) {
        if (v == null) return null;
        if (v instanceof byte[]) {
            StringBuilder b = new StringBuilder("0x");
            for (byte x : (byte[]) v) b.append(String.format("%02x", x));
            return b.toString();
        }
        return v.toString();
    }

    static List<Object> results(Statement st, boolean isRs) throws SQLException {
        List<Object> res = new ArrayList<>();
        while (true) {
            if (isRs) {
                ResultSet rs = st.getResultSet();
                ResultSetMetaData md = rs.getMetaData();
                List<Object> cols = new ArrayList<>(), rows = new ArrayList<>();
                for (int i = 1; i <= md.getColumnCount(); i++) cols.add(md.getColumnLabel(i) + " " + md.getColumnTypeName(i));
                while (rs.next()) {
                    List<Object> row = new ArrayList<>();
                    for (int i = 1; i <= md.getColumnCount(); i++) row.add(value(rs.getObject(i)));
                    rows.add(row);
                }
                res.add(map("cols", cols, "rows", rows));
            } else {
                int n = st.getUpdateCount();
                if (n == -1) return res;
                res.add(map("affected", n));
            }
            isRs = st.getMoreResults();
        }
    }

    static Object runCase(Connection c, String mode, String sql, List<String> params) throws SQLException {
        if (!mode.equals("prep")) {
            Statement st = c.createStatement();
            return results(st, st.execute(sql));
        }
        PreparedStatement ps = c.prepareStatement(sql);
        for (int i = 0; i < params.size(); i++) {
            String p = params.get(i), v = p.substring(2);
            switch (p.charAt(0)) {
                case 'i': ps.setLong(i + 1, Long.parseLong(v)); break;
                case 'd': ps.setDouble(i + 1, Double.parseDouble(v)); break;
                case 's': ps.setString(i + 1, v); break;
                case 'b': ps.setBytes(i + 1, hex(v)); break;
                default: ps.setNull(i + 1, Types.VARCHAR);
            }
        }
        return results(ps, ps.execute());
    }

    static byte[] hex(String s) {
        byte[] b = new byte[s.length() / 2];
        for (int i = 0; i < b.length; i++) b[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
        return b;
    }

    static Object error(SQLException e) {
        return map("error", e.getErrorCode(), "state", e.getSQLState(), "msg", e.getMessage());
    }

    static void check(String target) throws Exception {
        try (Connection c = connect(target, "&allowMultiQueries=true"); Connection s = connect(target, "&useServerPrepStmts=true&useBulkStmts=true")) {
            for (String line : Files.readAllLines(Paths.get(E.get("CL_CASES")), StandardCharsets.UTF_8)) {
                if (line.startsWith("#") || line.isBlank()) continue;
                String[] f = line.split("\t");
                String sql = f[2].replace("{t}", "cl_" + NAME);
                List<String> params = Arrays.asList(f).subList(3, f.length);
                try {
                    out("case", f[0], "out", runCase(c, f[1], sql, params));
                } catch (SQLException e) {
                    out("case", f[0], "out", error(e));
                }
                if (f[1].equals("prep")) {
                    try {
                        out("case", f[0] + "/server", "out", runCase(s, f[1], sql, params));
                    } catch (SQLException e) {
                        out("case", f[0] + "/server", "out", error(e));
                    }
                }
            }
            String t = "cl_" + NAME + "_types";
            // executeBatch: rewritten or pipelined by default, COM_STMT_BULK_EXECUTE with server prepares.
            for (Connection b : new Connection[] {c, s}) {
                PreparedStatement ps = b.prepareStatement("INSERT INTO " + t + " (id, s) VALUES (?, ?)");
                for (int id = 20; id < 23; id++) {
                    ps.setInt(1, b == c ? id : id + 10);
                    ps.setString(2, "batch " + id);
                    ps.addBatch();
                }
                List<Object> counts = new ArrayList<>();
                try {
                    for (int n : ps.executeBatch()) counts.add(n);
                } catch (SQLException e) {
                    counts.add(error(e));
                }
                Statement st = b.createStatement();
                counts.add(results(st, st.execute("SELECT id, s FROM " + t + " WHERE id >= 20 ORDER BY id")));
                out("case", b == c ? "batch" : "batch/server", "out", counts);
            }
            c.setAutoCommit(false);
            Statement st = c.createStatement();
            st.executeUpdate("INSERT INTO " + t + " (id) VALUES (10)");
            c.rollback();
            st.executeUpdate("INSERT INTO " + t + " (id) VALUES (11)");
            c.commit();
            c.setAutoCommit(true);
            out("case", "tx", "out", results(st, st.execute("SELECT id FROM " + t + " WHERE id IN (10, 11)")));
            out("case", "ping", "out", c.isValid(2));
        }
        try (org.mariadb.jdbc.MariaDbPoolDataSource pool = new org.mariadb.jdbc.MariaDbPoolDataSource(url(target, "&maxPoolSize=2"))) {
            List<Object> seen = new ArrayList<>();
            for (int i = 0; i < 4; i++) {
                try (Connection pc = pool.getConnection(); Statement st = pc.createStatement()) {
                    seen.add(results(st, st.execute("SELECT @@session.wait_timeout = @@global.wait_timeout, DATABASE(), @@autocommit")));
                    st.execute("SET SESSION wait_timeout = 55");
                    pc.setAutoCommit(false);
                }
            }
            out("case", "pool", "out", seen);
        }
    }

    static Map<String, Object> timed(Connection c, String sql, Integer timeout) {
        long t0 = System.nanoTime();
        Object v = null, err = null;
        try (Statement st = c.createStatement()) {
            if (timeout != null) st.setQueryTimeout(timeout);
            ResultSet rs = st.executeQuery(sql);
            rs.next();
            v = rs.getString(1);
        } catch (SQLException e) {
            err = e.getErrorCode();
        }
        return map("value", v, "error", err, "ms", (System.nanoTime() - t0) / 1_000_000);
    }

    static String scalar(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return rs.getString(1);
        }
    }

    static void cancel() throws Exception {
        // KILL QUERY <the handshake's thread id> from a second connection, a bystander on a third.
        try (Connection victim = connect("baton", ""); Connection by = connect("baton", ""); Connection killer = connect("baton", "")) {
            long vid = ((org.mariadb.jdbc.MariaDbConnection) victim).getServerThreadId();
            Map<String, Object> res = new LinkedHashMap<>();
            Thread tb = new Thread(() -> res.put("bystander", timed(by, "SELECT SLEEP(2)", null)));
            Thread tk = new Thread(() -> {
                try {
                    Thread.sleep(500);
                    killer.createStatement().execute("KILL QUERY " + vid);
                } catch (Exception e) {
                    res.put("killer", e.toString());
                }
            });
            tb.start();
            tk.start();
            res.put("victim", timed(victim, "SELECT SLEEP(5)", null));
            tb.join();
            tk.join();
            res.put("after", scalar(victim, "SELECT 1"));
            out("case", "kill", "out", res);
            // Statement.cancel() from another thread: Connector/J sends KILL QUERY on a new connection.
            try (Statement st = victim.createStatement()) {
                Thread tc = new Thread(() -> {
                    try {
                        Thread.sleep(500);
                        st.cancel();
                    } catch (Exception e) {
                        res.put("canceller", e.toString());
                    }
                });
                tc.start();
                long t0 = System.nanoTime();
                Map<String, Object> r = map("value", null, "error", null);
                try (ResultSet rs = st.executeQuery("SELECT SLEEP(5)")) {
                    rs.next();
                    r.put("value", rs.getString(1));
                } catch (SQLException e) {
                    r.put("error", e.getErrorCode());
                }
                r.put("ms", (System.nanoTime() - t0) / 1_000_000);
                tc.join();
                r.put("after", scalar(victim, "SELECT 1"));
                out("case", "cancel_api", "out", r);
            }
            // Statement.setQueryTimeout(1): Connector/J's own cancel.
            Map<String, Object> t = timed(victim, "SELECT SLEEP(5)", 1);
            t.put("after", scalar(victim, "SELECT 1"));
            out("case", "timeout", "out", t);
        }
    }

    // The writers' pool validates every connection it hands out (COM_PING), and its
    // sessions track only autocommit (as a driver rewriting session tracking does):
    // baton must still see each write's GTID, and move the sessions.
    static final String WRITER = "&maxPoolSize=2&poolValidMinDelay=0&sessionVariables=session_track_system_variables='autocommit'";
    static org.mariadb.jdbc.MariaDbPoolDataSource writerPool;

    static String op(String kind, long seq, boolean gtid) throws SQLException {
        try (Connection c = writerPool.getConnection()) {
            String ins = "INSERT INTO cl_rows (driver, seq, kind) VALUES ('" + NAME + "', %d, '" + kind + "')";
            if (kind.equals("text")) {
                c.createStatement().executeUpdate(String.format(ins, seq));
            } else if (kind.equals("prep")) {
                PreparedStatement ps = c.prepareStatement("INSERT INTO cl_rows (driver, seq, kind) VALUES (?, ?, 'prep')");
                ps.setString(1, NAME);
                ps.setLong(2, seq);
                ps.executeUpdate();
            } else {
                c.setAutoCommit(false);
                try {
                    c.createStatement().executeUpdate(String.format(ins, seq));
                    c.createStatement().executeUpdate(String.format(ins, -seq));
                    c.commit();
                } catch (SQLException e) {
                    try {
                        c.rollback();
                    } catch (SQLException ignored) {
                    }
                    throw e;
                } finally {
                    try {
                        c.setAutoCommit(true);
                    } catch (SQLException ignored) {
                    }
                }
            }
            return gtid ? scalar(c, "SELECT @@last_gtid") : null;
        }
    }

    static void write(String stop) throws Exception {
        String[] kinds = {"text", "prep", "tx"};
        // Both pooled sessions narrow their tracking by a statement too (sessionVariables
        // does it while logging in, pipelined): what a driver recycling a session does.
        try (Connection a = writerPool.getConnection(); Connection b = writerPool.getConnection()) {
            for (Connection c : new Connection[] {a, b}) c.createStatement().execute("SET session_track_system_variables = 'autocommit'");
        }
        for (long seq = 1; !Files.exists(Paths.get(stop)); seq++) {
            String k = kinds[(int) (seq % 3)];
            try {
                op(k, seq, false);
                out("ack", seq, "k", k);
            } catch (SQLException e) {
                out("fail", seq, "k", k, "code", e.getErrorCode(), "msg", e.toString(), "t", System.currentTimeMillis());
            }
            Thread.sleep(10);
        }
    }

    // A session left idle until the file exists (run.py makes it right after the crash), then
    // SELECT 1. It tracks only autocommit, as the writers' sessions.
    static void probe(String path) throws Exception {
        try (Connection c = connect("baton", "&sessionVariables=session_track_system_variables='autocommit'")) {
            scalar(c, "SELECT 1");
            while (!Files.exists(Paths.get(path))) Thread.sleep(5);
            out("probe", timed(c, "SELECT 1", null));
        }
    }

    public static void main(String[] args) throws Exception {
        String v;
        try {  // Connector/J 2.x keeps its full version here
            v = (String) Class.forName("org.mariadb.jdbc.internal.util.constant.Version").getField("version").get(null);
        } catch (ReflectiveOperationException e) {
            v = null;
        }
        Driver d = new org.mariadb.jdbc.Driver();
        out("driver", NAME, "version", v != null ? v : d.getMajorVersion() + "." + d.getMinorVersion());
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line; (line = in.readLine()) != null; ) {
            String[] a = line.trim().split(" ");
            if (a[0].equals("quit")) break;
            try {
                switch (a[0]) {
                    case "check": check(a[1]); break;
                    case "cancel": cancel(); break;
                    case "probe": probe(a[1]); break;
                    case "gtid":
                    case "write":
                        if (writerPool == null) writerPool = new org.mariadb.jdbc.MariaDbPoolDataSource(url("baton", WRITER));
                        if (a[0].equals("gtid")) out("gtid", op(a[1], 0, true));
                        else write(a[1]);
                        break;
                }
            } catch (Exception e) {
                out("error", a[0] + ": " + e);
            }
            out("done", a[0]);
        }
        if (writerPool != null) writerPool.close();
        System.exit(0);
    }
}
