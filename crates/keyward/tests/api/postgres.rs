//! The PostgreSQL run: the whole suite again, each test on a fresh PostgreSQL database.
//! This test re-runs its own test binary with `KEYWARD_TEST_BACKEND=postgres`.

use std::io::Write;
use std::process::Command;

const NAME: &str = "postgres::the_whole_suite_passes_on_postgresql";

#[test]
fn the_whole_suite_passes_on_postgresql() {
    if std::env::var_os("KEYWARD_TEST_BACKEND").is_some() {
        return; // this is the inner run
    }
    // Written to the real stderr, not libtest's captured one: this should be seen.
    let mut stderr = std::io::stderr();
    let Ok(server) = std::env::var("KEYWARD_TEST_POSTGRES_URL") else {
        crate::helpers::skip(
            "the PostgreSQL run: KEYWARD_TEST_POSTGRES_URL is not set \
             (e.g. postgres://postgres@127.0.0.1:5432/test; each test creates and drops its own database)",
        );
        return;
    };
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--skip", NAME, "--test-threads", "4"])
        .env("KEYWARD_TEST_BACKEND", "postgres")
        .env("KEYWARD_SKIPS_FILE", crate::helpers::skips_file())
        .env("KEYWARD_TEST_POSTGRES_URL", &server)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or("no summary")
        .to_owned();
    let _ = writeln!(stderr, "\nPostgreSQL run: {summary}\n");
    assert!(
        output.status.success(),
        "the suite failed on PostgreSQL:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!summary.contains(" 0 passed"), "{summary}");
}
