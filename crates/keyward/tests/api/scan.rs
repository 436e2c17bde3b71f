//! `keyward scan` (SPEC §9.1) through the binary: files, folders, standard input and a git
//! history; checksum-validated matches of every token kind; never a whole token in the output;
//! exit 0 / 1 / 2.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn keyward_scan(args: &[&str], dir: &Path, stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("scan")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn samples() -> String {
    std::fs::read_to_string(crate::docs::repo_file("testdata/scan-samples.txt")).unwrap()
}

/// The valid tokens of the samples (the lines that name a kind).
fn sample_tokens() -> Vec<String> {
    samples()
        .lines()
        .filter_map(|l| {
            l.split_once("KEY=\"")
                .map(|(_, t)| t.trim_end_matches('"').to_owned())
        })
        .collect()
}

#[test]
fn every_kind_is_found_in_folders_and_stdin_and_never_printed_whole() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src/deep")).unwrap();
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join("src/deep/samples.txt"), samples()).unwrap();
    std::fs::write(dir.path().join(".git/config"), samples()).unwrap(); // history: --git's job
    std::fs::write(dir.path().join("clean.txt"), "nothing here\n").unwrap();

    let output = keyward_scan(&[], dir.path(), None);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8(output.stdout).unwrap();
    let kinds: Vec<&str> = text.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "public_key",
            "secret_key",
            "test_public_key",
            "test_secret_key",
            "service_token"
        ],
        "{text}"
    );
    assert!(
        text.lines()
            .all(|l| l.starts_with("./src/deep/samples.txt:")),
        "{text}"
    );
    assert!(
        text.starts_with("./src/deep/samples.txt:5: public_key pk_partner_"),
        "{text}"
    );
    for token in sample_tokens() {
        assert!(!text.contains(&token), "a whole token was printed");
    }

    let json = keyward_scan(&["--json", "-"], dir.path(), Some(&samples()));
    assert_eq!(json.status.code(), Some(1));
    let records: Vec<serde_json::Value> = String::from_utf8(json.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5);
    let first = &records[0];
    assert_eq!(
        (first["path"].as_str(), first["line"].as_u64()),
        (Some("-"), Some(5))
    );
    let token = &sample_tokens()[0];
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    assert_eq!(first["sha256"], sha.as_str());
    assert!(first["hint"].as_str().unwrap().ends_with('…'));

    assert_eq!(
        keyward_scan(&["clean.txt"], dir.path(), None).status.code(),
        Some(0)
    );
    let missing = keyward_scan(&["clean.txt", "missing.txt"], dir.path(), None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("missing.txt"));
}

#[test]
fn a_token_in_the_git_history_is_found_after_it_was_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    };
    git(&["init", "-q"]);
    std::fs::write(
        dir.path().join("config.env"),
        format!("A=1\nB=2\nKEYWARD_SECRET_KEY={}\n", sample_tokens()[1]),
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "oops"]);
    std::fs::write(dir.path().join("config.env"), "A=1\nB=2\n").unwrap();
    git(&["commit", "-q", "-am", "remove the key"]);

    assert_eq!(
        keyward_scan(&[], dir.path(), None).status.code(),
        Some(0),
        "the work tree is clean"
    );
    let history = keyward_scan(&["--git"], dir.path(), None);
    assert_eq!(history.status.code(), Some(1));
    let text = String::from_utf8(history.stdout).unwrap();
    let line = text.lines().next().unwrap_or_default();
    assert!(
        line.contains(":config.env:3: secret_key sk_partner_"),
        "{text}"
    );
    assert!(!text.contains(&sample_tokens()[1]));
    let not_a_repo = tempfile::tempdir().unwrap();
    assert_eq!(
        keyward_scan(&["--git"], not_a_repo.path(), None)
            .status
            .code(),
        Some(2)
    );
}
