//! `keyward partner import FILE` (SPEC §10.2): moves an exchange's partners in with the keys
//! they hold. The file is read line by line; each row is checked on its own, then written with
//! up to 999 others in one transaction. Bad rows are reported by line and skipped; a run can be
//! repeated (rows already imported are skipped). Progress goes to stderr, the report to stdout;
//! no key is ever printed.

use anyhow::Context as _;
use keyward_server::flows::import::{import_batch, parse_row, ImportRow, Outcome, SeenInFile};
use keyward_server::flows::key_cache::wait_out;
use keyward_server::flows::Context;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

/// Rows per transaction (SPEC §10.2).
const BATCH: usize = 1_000;

/// What the run did, row by row.
#[derive(Default)]
struct Tally {
    lines: u64,
    imported: u64,
    legacy: u64,
    already: u64,
    refused: u64,
}

pub struct ImportOptions {
    pub dry_run: bool,
    pub strict: bool,
}

pub async fn import(
    context: impl std::future::Future<Output = anyhow::Result<Context>>,
    file: &Path,
    operator: &str,
    options: ImportOptions,
) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file)
                .with_context(|| format!("could not open {}", file.display()))?,
        ))
    };
    // Read only when something is written: a dry run needs neither the master key nor a write.
    let context = if options.dry_run {
        None
    } else {
        Some(context.await?)
    };
    let started = std::time::Instant::now();
    let now = chrono::Utc::now().timestamp_millis();
    let mut tally = Tally::default();
    let mut seen = SeenInFile::default();
    let mut batch: Vec<ImportRow> = Vec::with_capacity(BATCH);
    let mut progress = Progress::new();
    let mut ignored = std::collections::BTreeSet::new();
    for (index, line) in reader.lines().enumerate() {
        let number = index as u64 + 1;
        let line = line.with_context(|| format!("could not read line {number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        tally.lines += 1;
        let checked = parse_row(number, &line, now).and_then(|row| seen.check(&row).map(|()| row));
        match checked {
            Ok(row) => {
                ignored.extend(row.ignored.iter().cloned());
                batch.push(row);
            }
            Err(problem) => tally.refuse(&mut progress, number, &problem),
        }
        if batch.len() == BATCH {
            write_batch(
                context.as_ref(),
                &mut batch,
                operator,
                &mut tally,
                &mut progress,
            )
            .await?;
            progress.show(&tally, started);
        }
    }
    write_batch(
        context.as_ref(),
        &mut batch,
        operator,
        &mut tally,
        &mut progress,
    )
    .await?;
    progress.finish();
    if let Some(context) = &context {
        if tally.imported > 0 {
            // Imported keys work on every node once this returns (as with every credential).
            wait_out(context.key_cache.bound()).await;
        }
    }
    if !ignored.is_empty() {
        let names: Vec<String> = ignored.iter().map(|n| format!("{n:?}")).collect();
        println!(
            "Left aside, not of the format: {} (taken: partner_code, email, public_key, secret_key, created_at, allowed_ips).",
            names.join(", ")
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let verb = if options.dry_run {
        "would be imported (dry run: nothing written)"
    } else {
        "imported"
    };
    println!(
        "{} rows read in {seconds:.1} s: {} {verb} ({} with legacy keys), {} already there, {} refused",
        tally.lines, tally.imported, tally.legacy, tally.already, tally.refused
    );
    if tally.legacy > 0 && !options.dry_run {
        println!(
            "Legacy keys work until the partner regenerates them{}.",
            context
                .as_ref()
                .and_then(|c| c.settings.expiry.legacy_keys_until)
                .map(|ms| format!(
                    " or until KEYWARD_LEGACY_KEYS_UNTIL ({})",
                    super::output::time_text(Some(ms))
                ))
                .unwrap_or_default()
        );
    }
    if options.strict && tally.refused > 0 {
        anyhow::bail!(
            "{} rows were refused (listed above); the others were {verb}",
            tally.refused
        );
    }
    Ok(())
}

/// Writes the batch (or, in a dry run, counts it) and reports each row that was not imported.
async fn write_batch(
    context: Option<&Context>,
    batch: &mut Vec<ImportRow>,
    operator: &str,
    tally: &mut Tally,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let Some(context) = context else {
        tally.imported += batch.len() as u64;
        tally.legacy += batch.iter().filter(|row| row.legacy()).count() as u64;
        batch.clear();
        return Ok(());
    };
    let first = batch[0].line;
    let outcomes = import_batch(context, batch, operator)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| {
            format!("the batch from line {first} was not written (the rows before it were)")
        })?;
    for ((line, outcome), row) in outcomes.into_iter().zip(batch.iter()) {
        match outcome {
            Outcome::Imported => {
                tally.imported += 1;
                tally.legacy += u64::from(row.legacy());
            }
            Outcome::AlreadyThere => tally.already += 1,
            Outcome::Refused(problem) => tally.refuse(progress, line, &problem),
        }
    }
    batch.clear();
    Ok(())
}

impl Tally {
    fn refuse(&mut self, progress: &mut Progress, line: u64, problem: &str) {
        self.refused += 1;
        progress.clear();
        println!("line {line}: {problem}; skipped");
    }
}

/// A progress line on stderr: redrawn in place on a terminal, a line per 10,000 rows otherwise.
struct Progress {
    terminal: bool,
    drawn: bool,
    last_logged: u64,
}

impl Progress {
    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            drawn: false,
            last_logged: 0,
        }
    }

    fn show(&mut self, tally: &Tally, started: std::time::Instant) {
        let rate = tally.lines as f64 / started.elapsed().as_secs_f64().max(0.001);
        let text = format!(
            "{} rows: {} imported, {} already there, {} refused ({rate:.0} rows/s)",
            tally.lines, tally.imported, tally.already, tally.refused
        );
        if self.terminal {
            eprint!("\r{text}\x1b[K");
            let _ = std::io::stderr().flush();
            self.drawn = true;
        } else if tally.lines >= self.last_logged + 10_000 {
            eprintln!("{text}");
            self.last_logged = tally.lines;
        }
    }

    /// Moves off the progress line before something else is printed.
    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[K");
            self.drawn = false;
        }
    }

    fn finish(&mut self) {
        self.clear();
    }
}
