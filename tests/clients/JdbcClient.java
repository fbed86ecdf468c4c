// What JDBC tools (Metabase, DBeaver, Tableau) ask on sync, asked of
// `supportfunnel serve` through pgjdbc.
//
// Usage: java -cp postgresql.jar JdbcClient.java URL ARTICLE_VIEW_COUNT
// Prints one line per check; exits non-zero at the first failure.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;

public class JdbcClient {
    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("FAILED: " + what);
            System.exit(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        long expected = Long.parseLong(args[1]);
        try (Connection c = DriverManager.getConnection(url, "supportfunnel", "")) {
            DatabaseMetaData md = c.getMetaData();
            System.out.println("product " + md.getDatabaseProductName() + " "
                + md.getDatabaseProductVersion());
            check(md.getDatabaseMajorVersion() == 16, "major version");

            Set<String> schemas = new HashSet<>();
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) {
                    schemas.add(rs.getString("TABLE_SCHEM"));
                }
            }
            check(schemas.contains("public"), "schemas " + schemas);

            Map<String, String> tables = new HashMap<>();
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"})) {
                while (rs.next()) {
                    tables.put(rs.getString("TABLE_NAME"), rs.getString("TABLE_TYPE"));
                }
            }
            check("TABLE".equals(tables.get("events")), "tables " + tables);
            check("VIEW".equals(tables.get("sessions")), "tables " + tables);
            System.out.println("tables " + tables.size());

            Map<String, String> columns = new HashMap<>();
            try (ResultSet rs = md.getColumns(null, "public", "events", "%")) {
                while (rs.next()) {
                    columns.put(rs.getString("COLUMN_NAME"), rs.getString("TYPE_NAME"));
                }
            }
            check(columns.containsKey("event_id") && columns.containsKey("ts"), "columns " + columns);
            System.out.println("columns " + columns);

            // Keys and indexes: our tables have none, so each answers no
            // rows (with the columns JDBC defines), never an error.
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "events")) {
                check(!rs.next() && rs.getMetaData().getColumnCount() == 6, "primary keys");
            }
            try (ResultSet rs = md.getImportedKeys(null, "public", "events")) {
                check(!rs.next() && rs.getMetaData().getColumnCount() == 14, "imported keys");
            }
            try (ResultSet rs = md.getExportedKeys(null, "public", "events")) {
                check(!rs.next() && rs.getMetaData().getColumnCount() == 14, "exported keys");
            }
            try (ResultSet rs = md.getIndexInfo(null, "public", "events", false, true)) {
                check(!rs.next() && rs.getMetaData().getColumnCount() == 13, "index info");
            }
            System.out.println("keys and indexes");

            try (PreparedStatement ps =
                     c.prepareStatement("SELECT count(*) AS n FROM events WHERE event_type = ?")) {
                ps.setString(1, "article_view");
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next(), "a row");
                    long n = rs.getLong("n");
                    check(n == expected, "count " + n + " not " + expected);
                }
            }
            System.out.println("prepared statement");
        }
    }
}
