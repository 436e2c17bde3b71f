//! Which store the suite runs on. SQLite by default; with `KEYWARD_TEST_BACKEND=postgres`
//! (set by `postgres::the_whole_suite_passes_on_postgresql`) every test gets a fresh database
//! on the server of `KEYWARD_TEST_POSTGRES_URL`, dropped afterwards.

use sqlx::Connection;

pub fn postgres_server() -> Option<String> {
    (std::env::var("KEYWARD_TEST_BACKEND").as_deref() == Ok("postgres")).then(|| {
        std::env::var("KEYWARD_TEST_POSTGRES_URL")
            .expect("KEYWARD_TEST_BACKEND=postgres needs KEYWARD_TEST_POSTGRES_URL")
    })
}

/// A database of its own for one test; dropped (with its connections) when this is dropped.
pub struct TestDatabase {
    pub url: String,
    server: String,
    name: String,
}

/// Runs `future` to completion on a runtime of its own, so that it can be called from `Drop`
/// and from synchronous code inside a Tokio test.
fn block_on<T: Send + 'static>(future: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    })
    .join()
    .unwrap()
}

impl TestDatabase {
    pub fn create(server: &str) -> Self {
        let name = format!("keyward_test_{}", uuid::Uuid::new_v4().simple());
        let mut url = url::Url::parse(server).unwrap();
        url.set_path(&name);
        let (server_owned, statement) = (server.to_owned(), format!("CREATE DATABASE \"{name}\""));
        block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&server_owned).await.unwrap();
            sqlx::query(&statement).execute(&mut conn).await.unwrap();
        });
        Self {
            url: url.to_string(),
            server: server.to_owned(),
            name,
        }
    }

    /// Every row of every table, as text (to check what is stored in the clear).
    pub fn dump(&self) -> String {
        let url = self.url.clone();
        block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let mut out = String::new();
            for table in [
                "partners",
                "partner_keys",
                "links",
                "outbox",
                "replays",
                "audit_events",
                "meta",
            ] {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT CAST(t AS TEXT) FROM {table} t"))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                out.push_str(&rows.join("\n"));
            }
            out
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, statement) = (
            self.server.clone(),
            format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
        );
        block_on(async move {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&server).await {
                let _ = sqlx::query(&statement).execute(&mut conn).await;
            }
        });
    }
}
