//! `keyward scan` (SPEC §9.1): keyward's tokens in files, folders, standard input or a git
//! repository's history, checksum-validated, printed without ever printing a whole token.
//! Needs no server and no database. Exit 0: nothing found; 1: something found; 2: some input
//! could not be read (what could be read was still scanned and reported).

use clap::Args;
use keyward_core::scan::{find_tokens, lines_of};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files and folders to scan (folders recursively, without following links or entering
    /// `.git`); `-` for standard input. Default: the current folder.
    pub paths: Vec<PathBuf>,
    /// Walk the whole history of the git repository at each path instead (every line any
    /// commit added, on every branch), with the `git` command.
    #[arg(long)]
    pub git: bool,
    /// JSON lines `{path, line, kind, hint, sha256}` instead of `path:line: kind hint`.
    #[arg(long)]
    pub json: bool,
}

/// One finding as `--json` writes it, in this order.
#[derive(serde::Serialize)]
struct Record<'a> {
    path: &'a str,
    line: usize,
    kind: &'static str,
    hint: String,
    sha256: String,
}

/// What a scan saw.
#[derive(Default)]
struct Tally {
    found: usize,
    errors: usize,
}

pub fn run(args: ScanArgs) -> ExitCode {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut tally = Tally::default();
    for path in &paths {
        if args.git {
            scan_history(path, args.json, &mut out, &mut tally);
        } else if path.as_os_str() == "-" {
            let mut text = Vec::new();
            match std::io::stdin().read_to_end(&mut text) {
                Ok(_) => report("-", &text, args.json, &mut out, &mut tally),
                Err(e) => error(&mut tally, format_args!("standard input: {e}")),
            }
        } else {
            scan_path(path, args.json, &mut out, &mut tally);
        }
    }
    if out.flush().is_err() {
        return ExitCode::from(2);
    }
    if tally.errors > 0 {
        ExitCode::from(2)
    } else if tally.found > 0 {
        eprintln!(
            "keyward scan: {} token(s) found; each works until it is revoked or regenerated",
            tally.found
        );
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn error(tally: &mut Tally, what: std::fmt::Arguments<'_>) {
    tally.errors += 1;
    eprintln!("keyward scan: {what}");
}

/// A file, or a folder walked recursively (links are not followed; `.git` is history, which
/// `--git` reads).
fn scan_path(path: &Path, json: bool, out: &mut impl Write, tally: &mut Tally) {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) => return error(tally, format_args!("{}: {e}", path.display())),
    };
    if metadata.is_dir() {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => return error(tally, format_args!("{}: {e}", path.display())),
        };
        entries.sort();
        for entry in entries {
            if entry.file_name().is_some_and(|name| name == ".git") {
                continue;
            }
            scan_path(&entry, json, out, tally);
        }
    } else if metadata.is_file() {
        match std::fs::read(path) {
            Ok(text) => report(&path.display().to_string(), &text, json, out, tally),
            Err(e) => error(tally, format_args!("{}: {e}", path.display())),
        }
    }
}

/// Prints what `text` holds, named `name`; lines are counted from `first_line`.
fn report(name: &str, text: &[u8], json: bool, out: &mut impl Write, tally: &mut Tally) {
    report_from(name, text, 1, json, out, tally);
}

fn report_from(
    name: &str,
    text: &[u8],
    first_line: usize,
    json: bool,
    out: &mut impl Write,
    tally: &mut Tally,
) {
    let found = find_tokens(text);
    if found.is_empty() {
        return;
    }
    let lines = lines_of(text, found.iter().map(|f| f.offset));
    for (token, line) in found.iter().zip(lines) {
        let line = line + first_line - 1;
        let written = if json {
            let record = Record {
                path: name,
                line,
                kind: token.kind.name(),
                hint: token.hint(),
                sha256: token.sha256(),
            };
            writeln!(
                out,
                "{}",
                serde_json::to_string(&record).unwrap_or_default()
            )
        } else {
            writeln!(out, "{name}:{line}: {} {}", token.kind.name(), token.hint())
        };
        if written.is_err() {
            tally.errors += 1;
        }
        tally.found += 1;
    }
}

/// Every line added by any commit of the repository at `repo`, on every branch, read from
/// `git log -p` (the `git` command: what every machine that has a repository has). Findings
/// are named `COMMIT:PATH`.
fn scan_history(repo: &Path, json: bool, out: &mut impl Write, tally: &mut Tally) {
    let child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "log",
            "--all",
            "-p",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--unified=0",
            "--format=commit %H",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return error(tally, format_args!("could not run git: {e}")),
    };
    let Some(stdout) = child.stdout.take() else {
        return error(tally, format_args!("git gave no output"));
    };
    let mut reader = std::io::BufReader::new(stdout);
    let (mut commit, mut file, mut line) = (String::new(), None::<String>, 0usize);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return error(tally, format_args!("reading git's output: {e}")),
        }
        let text = buffer.strip_suffix(b"\n").unwrap_or(&buffer);
        if let Some(hash) = text.strip_prefix(b"commit ") {
            commit = String::from_utf8_lossy(&hash[..hash.len().min(12)]).into_owned();
        } else if let Some(path) = text.strip_prefix(b"+++ ") {
            file = path
                .strip_prefix(b"b/")
                .map(|p| String::from_utf8_lossy(p).into_owned());
        } else if text.starts_with(b"@@ ") {
            line = hunk_start(text).unwrap_or(1);
        } else if let (Some(added), Some(path)) = (text.strip_prefix(b"+"), &file) {
            report_from(&format!("{commit}:{path}"), added, line, json, out, tally);
            line += 1;
        }
    }
    let stderr = child
        .stderr
        .take()
        .map(|mut e| {
            let mut text = String::new();
            let _ = e.read_to_string(&mut text);
            text
        })
        .unwrap_or_default();
    match child.wait() {
        Ok(status) if status.success() => {}
        _ => error(
            tally,
            format_args!(
                "{}: not a git repository, or git failed: {}",
                repo.display(),
                stderr.trim()
            ),
        ),
    }
}

/// The first new line of a hunk: `@@ -a,b +c,d @@` gives `c`.
fn hunk_start(header: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(header).ok()?;
    let new = text.split_whitespace().find(|part| part.starts_with('+'))?;
    new[1..].split(',').next()?.parse().ok()
}
