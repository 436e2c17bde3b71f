//! The run's summary of skipped tests. Cargo runs this binary after `api` (test targets run
//! in name order), so it reads what `api`'s tests recorded as skipped in this very run (the
//! file is named after the cargo process both are children of) and prints it where it is seen:
//! a skip never hides behind an `ok`.

use std::io::Write;

#[test]
fn summary_of_the_skipped_tests() {
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "keyward-skips-{}.txt",
        std::os::unix::process::parent_id()
    ));
    let Ok(text) = std::fs::read_to_string(&file) else {
        return; // nothing was skipped in this run
    };
    let _ = std::fs::remove_file(&file);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.dedup();
    let mut stderr = std::io::stderr();
    let _ = writeln!(
        stderr,
        "\n{} test(s) skipped in this run (see README: the groups that need outside programs):",
        lines.len()
    );
    for line in lines {
        let _ = writeln!(stderr, "  {line}");
    }
    let _ = writeln!(stderr);
}
