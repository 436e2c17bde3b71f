//! The documentation's examples are real: the README's curl walkthrough and the Node, Python
//! and openssl signing examples run against `keyward serve`, and the README quotes each file
//! word for word.

use crate::process::ServerProcess;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name)
}

/// Whether `program` runs here; with KEYWARD_STRICT_TESTS (CI) a missing one is a failure,
/// elsewhere a loud skip.
pub fn available(program: &str, arg: &str) -> bool {
    let ok = Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        crate::helpers::skip(&format!("{program} is not installed"));
    }
    ok
}

/// The rendered documents are their templates with every `@@examples/…@@` replaced by the
/// file as it is (what `scripts/render-docs.py` writes): the docs quote the code CI runs.
#[test]
fn every_rendered_document_is_in_step_with_its_template_and_examples() {
    let pattern = regex::Regex::new(r"@@([^@]+)@@").unwrap();
    for (template, rendered) in [
        ("README.template.md", "README.md"),
        ("docs/partners.template.md", "docs/partners.md"),
        ("docs/integration.template.md", "docs/integration.md"),
    ] {
        let text = std::fs::read_to_string(repo_file(template)).unwrap();
        let expected = pattern.replace_all(&text, |caps: &regex::Captures| {
            let quoted = std::fs::read_to_string(repo_file(&caps[1])).unwrap();
            quoted.trim_end_matches('\n').to_owned()
        });
        let expected = format!(
            "<!-- Generated from {template} by scripts/render-docs.py: edit the template, then run the script. -->\n{expected}"
        );
        let actual = std::fs::read_to_string(repo_file(rendered)).unwrap();
        assert!(
            actual == expected,
            "{rendered} is not {template} rendered: run scripts/render-docs.py"
        );
    }
    let integration = std::fs::read_to_string(repo_file("docs/integration.md")).unwrap();
    for example in [
        "examples/upstream.py",
        "examples/verify_service.py",
        "examples/verify_service.mjs",
    ] {
        let text = std::fs::read_to_string(repo_file(example)).unwrap();
        assert!(
            integration.contains(text.trim()),
            "docs/integration.md quotes {example}"
        );
    }
}

#[test]
fn the_readme_quotes_every_example_word_for_word() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    for example in [
        "examples/walkthrough.sh",
        "examples/whoami.mjs",
        "examples/whoami.py",
        "examples/whoami.sh",
    ] {
        let text = std::fs::read_to_string(repo_file(example)).unwrap();
        assert!(
            readme.contains(text.trim()),
            "README.md does not quote {example} as it is"
        );
    }
}

#[tokio::test]
async fn the_walkthrough_and_the_signing_examples_run_against_the_server() {
    if !available("openssl", "version") || !available("curl", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    // Twice against the same server, as a newcomer would run it: each run is its own partner.
    let mut partners = Vec::new();
    for _ in 0..2 {
        let walkthrough = Command::new("sh")
            .arg(repo_file("examples/walkthrough.sh"))
            .env("KEYWARD_URL", &server.address)
            .env("KEYWARD_DATA_DIR", dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&walkthrough.stdout).into_owned();
        assert!(
            walkthrough.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&walkthrough.stderr)
        );
        assert!(stdout.contains("\"revoked_key\""), "{stdout}");
        assert_eq!(stdout.matches("signed correctly").count(), 2, "{stdout}");
        // It prints the keys it got and what to do next.
        let printed = |label: &str| {
            stdout
                .lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no {label} in {stdout}"))
        };
        assert!(printed("public key").starts_with("pk_partner_"));
        assert!(printed("secret key").starts_with("sk_partner_"));
        assert_eq!(printed("partner ID").len(), 36);
        assert!(stdout.contains("Next:"), "{stdout}");
        partners.push(printed("partner ID"));
    }
    assert_ne!(
        partners[0], partners[1],
        "each run onboards its own partner"
    );

    // A partner of our own for the signing examples.
    let (_, public, secret) = server
        .partner(dir.path(), "EXAMPLES", "x@examples.example")
        .await;
    let (public, secret) = (public.as_str(), secret.as_str());

    let mut runs = vec![("sh", "examples/whoami.sh")];
    if available("node", "--version") {
        runs.push(("node", "examples/whoami.mjs"));
    }
    if available("python3", "--version") {
        runs.push(("python3", "examples/whoami.py"));
        runs.push(("python3", "examples/whoami_jcs.py"));
        runs.push(("python3", "examples/signature_mistakes.py"));
    }
    for (program, example) in runs {
        let output = Command::new(program)
            .arg(repo_file(example))
            .env("KEYWARD_URL", &server.address)
            .env("KEYWARD_PUBLIC_KEY", public)
            .env("KEYWARD_SECRET_KEY", secret)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{example}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("signed correctly"), "{example}: {stdout}");
        if example == "examples/signature_mistakes.py" {
            // Five mistakes, each failing and then fixed; the key one found by the hashes.
            assert_eq!(stdout.matches("fixed: 200").count(), 5, "{stdout}");
            assert!(stdout.contains("prefix: 401 invalid_signature (message right"));
        }
    }
}
