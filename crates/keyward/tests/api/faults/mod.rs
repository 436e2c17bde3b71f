//! Faults under load (SPEC §6): the real binary under a steady load of every kind of request,
//! faulted, then audited from the database and the mailbox: nothing lost, nothing doubled,
//! nothing acknowledged that did not happen, no secret in the logs.
//!
//! Each fault runs a few seconds here (CI); `bench/faults.sh` runs them longer
//! (`KEYWARD_FAULTS_SCALE`) and writes the table of `docs/reliability.md`.

mod driver;

use crate::crash::check_invariants;
use crate::database::{postgres_server, TestDatabase};
use crate::helpers::eventually;
use crate::process::{free_port, ServerProcess};
use driver::{Answer, Driver, Target};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How much longer than the CI form to run (`KEYWARD_FAULTS_SCALE`, default 1).
fn scale() -> u32 {
    std::env::var("KEYWARD_FAULTS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// The store the faulted nodes share: a fresh PostgreSQL database on the PostgreSQL run,
/// else a SQLite file in `dir`.
fn shared_store(dir: &Path) -> (String, Option<TestDatabase>) {
    match postgres_server().map(|server| TestDatabase::create(&server)) {
        Some(database) => (database.url.clone(), Some(database)),
        None => (format!("sqlite://{}/keyward.db", dir.display()), None),
    }
}

/// A node on a fixed port, so that clients find it again after a restart.
fn start_node(dir: &Path, port: u16, database_url: &str, extra: &[(&str, &str)]) -> ServerProcess {
    let listen = format!("127.0.0.1:{port}");
    let mut env = vec![
        ("KEYWARD_DATABASE_URL", database_url),
        ("KEYWARD_LISTEN", listen.as_str()),
        ("KEYWARD_IP_RATE_LIMIT_PER_MINUTE", "100000000"),
        ("KEYWARD_PARTNER_LINKS_PER_HOUR", "1000"),
        ("KEYWARD_RECIPIENT_EMAILS_PER_HOUR", "1000"),
    ];
    env.extend_from_slice(extra);
    ServerProcess::start(dir, &env)
}

/// Waits until every due email has been sent (read from a node's /metrics).
async fn outbox_drained(internal: &str, limit: Duration) -> bool {
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{internal}/metrics")).send().await {
            let text = response.text().await.unwrap_or_default();
            let value = |state: &str| {
                text.lines()
                    .find(|l| l.starts_with(&format!("keyward_outbox_emails{{state=\"{state}\"}}")))
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            };
            if value("pending") == Some(0.0) && value("scheduled") == Some(0.0) {
                return true;
            }
            if std::time::Instant::now() + Duration::from_millis(250) >= deadline {
                let outbox: Vec<&str> = text
                    .lines()
                    .filter(|l| l.starts_with("keyward_outbox"))
                    .collect();
                eprintln!("the outbox did not drain: {outbox:#?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// What the driver was told is in the database; what it was refused is not, and was not
/// emailed.
async fn answers_are_reflected(database_url: &str, mail_dir: &Path, answers: &[Answer]) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(database_url).await.unwrap();
    let codes: HashSet<String> = sqlx::query("SELECT code FROM partners")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    let keys: HashSet<Vec<u8>> = sqlx::query("SELECT public_key_hash FROM partner_keys")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<Vec<u8>, _>(0))
        .collect();
    let regenerating: HashSet<String> = sqlx::query(
        "SELECT DISTINCT p.code FROM links l JOIN partners p ON p.id = l.partner_id WHERE l.purpose = 'regeneration'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect();
    for answer in answers.iter().filter(|a| a.status == 200) {
        match answer.op {
            "onboard" => assert!(codes.contains(&answer.partner_code), "{answer:?}"),
            "redeem" => {
                let public = answer.public_key.as_deref().unwrap();
                let hash = Sha256::digest(public.as_bytes()).to_vec();
                assert!(
                    keys.contains(&hash),
                    "a key shown to a partner is not stored: {answer:?}"
                );
            }
            "regenerate" => assert!(regenerating.contains(&answer.partner_code), "{answer:?}"),
            _ => {}
        }
    }
    // An onboarding refused with an error (never answered 200) left nothing and sent nothing.
    let mut onboard: BTreeMap<&str, Vec<&Answer>> = BTreeMap::new();
    for answer in answers.iter().filter(|a| a.op == "onboard") {
        onboard
            .entry(&answer.partner_code)
            .or_default()
            .push(answer);
    }
    let mailed: HashSet<String> = crate::process::emails_in(mail_dir)
        .into_iter()
        .map(|(to, _)| to)
        .collect();
    for (code, tries) in onboard {
        if tries.iter().all(|a| a.status >= 400) {
            assert!(!codes.contains(code), "{code} was refused but exists");
            let email = &tries[0].email;
            assert!(
                !mailed.iter().any(|to| to.contains(email.as_str())),
                "{email} was emailed for a refused onboarding"
            );
        }
    }
    pool.close().await;
}

/// No secret key, link token or master key in what the nodes logged.
fn no_secrets_in(logs: &str, answers: &[Answer]) {
    assert!(!logs.contains("sk_partner_"), "a secret key in the logs");
    let token = regex::Regex::new(r"/link/[A-Za-z0-9_-]{43}").unwrap();
    assert!(!token.is_match(logs), "a link token in the logs");
    for answer in answers {
        if let Some(public) = &answer.public_key {
            assert!(
                !logs.contains(public.as_str()),
                "a whole public key in the logs"
            );
        }
    }
}

/// How the load went, as a line `bench/faults.sh` collects into docs/reliability.md.
fn report(fault: &str, backend: &str, answers: &[Answer], detail: &str) {
    let total = answers.len();
    let no_answer = answers.iter().filter(|a| a.status == 0).count();
    let unavailable = answers.iter().filter(|a| a.status == 503).count();
    let other_errors = answers
        .iter()
        .filter(|a| a.status >= 500 && a.status != 503)
        .count();
    let ok = answers.iter().filter(|a| a.status == 200).count();
    eprintln!(
        "FAULT-RESULT|{fault}|{backend}|{total}|{ok}|{no_answer}|{unavailable}|{other_errors}|{detail}"
    );
    assert_eq!(
        other_errors,
        0,
        "answers other than 503 among the 5xx: {:?}",
        answers
            .iter()
            .filter(|a| a.status >= 500 && a.status != 503)
            .take(5)
            .collect::<Vec<_>>()
    );
}

fn backend(database: &Option<TestDatabase>) -> &'static str {
    if database.is_some() {
        "postgresql"
    } else {
        "sqlite"
    }
}

#[tokio::test]
async fn ten_kill_9s_during_one_load_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (database_url, database) = shared_store(dir.path());
    let two_nodes = database.is_some();
    let ports: Vec<u16> = (0..if two_nodes { 2 } else { 1 })
        .map(|_| free_port())
        .collect();
    let upstream = driver::upstream().await;
    let gateway = [("KEYWARD_UPSTREAM_URL", upstream.as_str())];
    let mut nodes: Vec<ServerProcess> = ports
        .iter()
        .map(|port| start_node(dir.path(), *port, &database_url, &gateway))
        .collect();
    let token = String::from_utf8(
        nodes[0]
            .operator(&["service-token", "create", "load"])
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    // The verify API goes to the last node: its internal port is the same throughout (node
    // 0's changes with each restart), and with two nodes it is the one never killed.
    let survivor = nodes[nodes.len() - 1].internal_address.clone();
    let target = Target {
        nodes: nodes.iter().map(|n| n.address.clone()).collect(),
        verify: Some((vec![survivor; nodes.len()], token)),
        mail_dir: dir.path().join("mailbox"),
        link_wait: Duration::from_secs(5),
        gateway: true,
    };
    let driver = Driver::start(target, 4, "KILL");
    let kills = 10 * scale();
    let mut logs = String::new();
    for _ in 0..kills {
        let pause = 300 + rand::random::<u64>() % 500;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        nodes[0].kill();
        logs.push_str(&nodes[0].log());
        nodes[0] = start_node(dir.path(), ports[0], &database_url, &gateway);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answers = driver.stop().await;
    assert!(outbox_drained(&nodes[0].internal_address, Duration::from_secs(60)).await);
    for node in &nodes {
        logs.push_str(&node.log());
    }
    if two_nodes {
        // The other node served throughout: every request it got was answered.
        let survivor: Vec<_> = answers
            .iter()
            .filter(|a| a.node == 1 && a.op != "verify")
            .collect();
        assert!(survivor.len() > 10);
        assert!(
            survivor.iter().all(|a| a.status != 0),
            "the node that was not killed failed to answer"
        );
    }
    let redeemed = answers
        .iter()
        .filter(|a| a.op == "redeem" && a.status == 200)
        .count();
    assert!(
        answers.iter().any(|a| a.op == "gateway" && a.status == 200),
        "payouts went through the gateway"
    );
    assert!(
        redeemed >= 10,
        "the load got going ({redeemed} redemptions)"
    );
    check_invariants(&database_url, &dir.path().join("mailbox")).await;
    answers_are_reflected(&database_url, &dir.path().join("mailbox"), &answers).await;
    no_secrets_in(&logs, &answers);
    let store = if two_nodes {
        "postgresql, 2 nodes (node 1 never killed)"
    } else {
        "sqlite, 1 node"
    };
    report(
        &format!("kill -9 of node 0, ×{kills} during one load"),
        store,
        &answers,
        "invariants held; the outbox drained after the last restart",
    );
    drop(nodes);
    drop(database);
}

/// A PostgreSQL cluster of our own on a spare port (so other tests are not disturbed), run
/// as the `postgres` user; stopped and removed when dropped.
struct Cluster {
    data: tempfile::TempDir,
    port: u16,
    bin: std::path::PathBuf,
}

impl Cluster {
    fn pg_bin() -> Option<std::path::PathBuf> {
        let root = Path::new("/usr/lib/postgresql");
        let version = std::fs::read_dir(root)
            .ok()?
            .filter_map(Result::ok)
            .next()?;
        Some(version.path().join("bin"))
    }

    fn as_postgres(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .output()
            .unwrap()
    }

    fn start() -> Option<Self> {
        let bin = Self::pg_bin()?;
        let data = tempfile::Builder::new()
            .prefix("keyward-pg-")
            .tempdir_in("/tmp")
            .ok()?;
        Command::new("chown")
            .arg("postgres")
            .arg(data.path())
            .status()
            .ok()?;
        let cluster = Self {
            port: free_port(),
            data,
            bin,
        };
        let dir = cluster.data.path().join("db");
        let dir = dir.to_str()?.to_owned();
        Command::new("chown")
            .arg("postgres")
            .arg(cluster.data.path())
            .status()
            .ok()?;
        let init = cluster.as_postgres("initdb", &["-D", &dir, "-A", "trust", "-U", "postgres"]);
        if !init.status.success() {
            eprintln!("initdb: {}", String::from_utf8_lossy(&init.stderr));
            return None;
        }
        cluster.pg_ctl_start().then_some(cluster)
    }

    fn dir(&self) -> String {
        self.data.path().join("db").display().to_string()
    }

    fn pg_ctl_start(&self) -> bool {
        let options = format!("-p {} -k /tmp -c listen_addresses=127.0.0.1", self.port);
        let log = self.data.path().join("log").display().to_string();
        self.as_postgres(
            "pg_ctl",
            &["-D", &self.dir(), "-o", &options, "-l", &log, "-w", "start"],
        )
        .status
        .success()
    }

    fn stop(&self) {
        self.as_postgres("pg_ctl", &["-D", &self.dir(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn readyz(address: &str) -> u16 {
    match reqwest::Client::new()
        .get(format!("{address}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test]
async fn a_postgresql_restart_mid_load_is_503_then_recovers_by_itself() {
    if postgres_server().is_some() {
        return; // its own store: run once, in the SQLite run
    }
    let Some(cluster) = Cluster::start() else {
        crate::helpers::skip(
            "no PostgreSQL binaries (initdb, pg_ctl, runuser) to start a cluster of our own",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = cluster.url();
    let upstream = driver::upstream().await;
    let gateway = [("KEYWARD_UPSTREAM_URL", upstream.as_str())];
    let nodes: Vec<ServerProcess> = (0..2)
        .map(|_| start_node(dir.path(), free_port(), &url, &gateway))
        .collect();
    let target = Target {
        nodes: nodes.iter().map(|n| n.address.clone()).collect(),
        verify: None,
        mail_dir: dir.path().join("mailbox"),
        link_wait: Duration::from_secs(10),
        gateway: true,
    };
    let driver = Driver::start(target, 4, "PGRESTART");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = driver.answers().len();
    cluster.stop();
    // While it is down: /readyz says so, and requests that need it get 503 unavailable.
    let mut saw_unready = false;
    for _ in 0..50 {
        if readyz(&nodes[0].address).await == 503 && readyz(&nodes[1].address).await == 503 {
            saw_unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_unready, "/readyz tracks the database going away");
    tokio::time::sleep(Duration::from_millis(1500 * u64::from(scale()))).await;
    assert!(cluster.pg_ctl_start(), "PostgreSQL came back");
    // The nodes recover by themselves: no restart.
    let mut ready = false;
    for _ in 0..300 {
        if readyz(&nodes[0].address).await == 200 && readyz(&nodes[1].address).await == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the nodes are ready again without a restart");
    let during = driver.answers().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answers = driver.stop().await;
    let unavailable = answers[before..during]
        .iter()
        .filter(|a| a.status == 503 && a.code.as_deref() == Some("unavailable"))
        .count();
    assert!(
        unavailable > 0,
        "requests during the outage got 503 unavailable"
    );
    let after: Vec<_> = answers[during..]
        .iter()
        .filter(|a| a.status == 200)
        .collect();
    assert!(
        !after.is_empty(),
        "requests succeed again after the restart"
    );
    assert!(outbox_drained(&nodes[0].internal_address, Duration::from_secs(60)).await);
    let mut logs = String::new();
    for node in &nodes {
        logs.push_str(&node.log());
    }
    check_invariants(&url, &dir.path().join("mailbox")).await;
    answers_are_reflected(&url, &dir.path().join("mailbox"), &answers).await;
    no_secrets_in(&logs, &answers);
    report(
        "PostgreSQL restarted",
        "postgresql, 2 nodes",
        &answers,
        &format!("{unavailable} answered 503 unavailable while it was down"),
    );
}

/// An aiosmtpd sink (`bench/smtp_sink.py`) saving each message into `dir`; killed when dropped.
struct Sink(std::process::Child);

impl Sink {
    async fn start(port: u16, dir: &Path, fail_rate: f64) -> Self {
        let child = Command::new("python3")
            .arg(crate::docs::repo_file("bench/smtp_sink.py"))
            .arg(port.to_string())
            .arg(dir.join("arrivals.jsonl"))
            .args(["--fail-rate", &fail_rate.to_string(), "--save-dir"])
            .arg(dir.join("mail"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let up = eventually(Duration::from_secs(20), || {
            std::future::ready(std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        })
        .await;
        assert!(up.is_some());
        Self(child)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_flapping_mail_server_gets_every_email_once_it_is_back() {
    if !crate::process::aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (database_url, database) = shared_store(dir.path());
    let smtp_port = free_port();
    let smtp = format!("smtp://127.0.0.1:{smtp_port}");
    let node = start_node(
        dir.path(),
        free_port(),
        &database_url,
        &[("KEYWARD_SMTP_URL", &smtp)],
    );
    let mail_dir = dir.path().join("mail");
    let target = Target {
        nodes: vec![node.address.clone()],
        verify: None,
        mail_dir: mail_dir.clone(),
        link_wait: Duration::from_secs(20),
        gateway: false,
    };
    let mut sink = Some(Sink::start(smtp_port, dir.path(), 0.2).await);
    let driver = Driver::start(target, 4, "FLAP");
    let flaps = 3 * scale();
    for _ in 0..flaps {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        drop(sink.take()); // stopped
        tokio::time::sleep(Duration::from_millis(1000)).await;
        sink = Some(Sink::start(smtp_port, dir.path(), 0.2).await);
    }
    drop(sink);
    let _sink = Sink::start(smtp_port, dir.path(), 0.0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answers = driver.stop().await;
    assert!(
        outbox_drained(&node.internal_address, Duration::from_secs(120)).await,
        "every email sent once the server is back"
    );
    // Each email arrived; a copy only from the at-least-once window (a server killed between
    // taking a message and saying so), at most once per stop.
    let arrivals = std::fs::read_to_string(dir.path().join("arrivals.jsonl")).unwrap();
    let ids: Vec<String> = arrivals
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["message_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    let duplicates = ids.len() - unique.len();
    assert!(
        duplicates <= flaps as usize,
        "{duplicates} duplicates for {flaps} stops"
    );
    let retried = answers.len();
    check_invariants(&database_url, &mail_dir).await;
    answers_are_reflected(&database_url, &mail_dir, &answers).await;
    no_secrets_in(&node.log(), &answers);
    report(
        &format!("SMTP server stopped ×{flaps}, 20% of messages answered 451"),
        backend(&database),
        &answers,
        &format!(
            "{} emails, {duplicates} duplicates ({retried} answers)",
            unique.len()
        ),
    );
    drop(database);
}

#[tokio::test]
async fn a_full_disk_refuses_writes_keeps_reads_and_resumes() {
    if postgres_server().is_some() {
        return; // its own store: run once, in the SQLite run
    }
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        crate::helpers::skip("the full-disk test mounts a small tmpfs, which needs root");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let database_url = format!("sqlite://{}/keyward.db", mount.display());
    let node = start_node(
        &mount,
        free_port(),
        &database_url,
        &[("KEYWARD_KEY_CACHE_MS", "0")],
    );
    let partner = node.partner(&mount, "BEFORE", "ops@before.example").await;
    let client = reqwest::Client::new();
    let whoami = |(_, public, secret): (String, String, String)| {
        let client = client.clone();
        let address = node.address.clone();
        async move {
            client
                .post(format!("{address}{}", crate::helpers::WHOAMI))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {public}"))
                .body(crate::helpers::sign("{}", &secret))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Fill the disk.
    let filler = mount.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output();
    let onboard = |code: &'static str| {
        let client = client.clone();
        let address = node.address.clone();
        async move {
            let response = client
                .post(format!("{address}{}", crate::helpers::ONBOARD))
                .json(&serde_json::json!({"partner_code": code, "email": format!("{}@full.example", code.to_lowercase())}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (status, body["code"].as_str().unwrap_or("").to_owned())
        }
    };
    let mut refused = Vec::new();
    for code in ["FULL1", "FULL2", "FULL3"] {
        refused.push(onboard(code).await);
    }
    assert!(
        refused.iter().all(|(s, c)| *s == 503 && c == "unavailable"),
        "writes on a full disk are 503 unavailable: {refused:?}"
    );
    assert_eq!(whoami(partner.clone()).await, 200, "reads keep working");
    assert_eq!(readyz(&node.address).await, 200);
    // Space returns: writes resume, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let (status, _) = onboard("AFTER").await;
    assert_eq!(status, 200, "writes resume when space returns");
    assert_eq!(whoami(partner).await, 200);
    let mailbox = mount.join("mailbox");
    // Every email goes out once there is space. One whose result could not be recorded while
    // the disk was full keeps its claim (a 30 s lease on SQLite) before it is sent again.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&database_url).await.unwrap();
    let mut unsent = -1;
    for _ in 0..450 {
        unsent = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap_or(-1);
        if unsent == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if unsent != 0 {
        let rows = sqlx::query("SELECT kind, attempts, next_attempt_at, locked_until, dead_at, last_error FROM outbox WHERE sent_at IS NULL")
            .fetch_all(&pool)
            .await
            .unwrap();
        for row in rows {
            eprintln!(
                "unsent: {} attempts={} next={} locked={:?} dead={:?} error={:?}",
                row.get::<String, _>(0),
                row.get::<i64, _>(1),
                row.get::<i64, _>(2),
                row.get::<Option<i64>, _>(3),
                row.get::<Option<i64>, _>(4),
                row.get::<Option<String>, _>(5)
            );
        }
        panic!(
            "{unsent} email(s) unsent 90 s after the space returned:\n{}",
            node.log()
        );
    }
    // Nothing half-written: the refused onboardings left nothing.
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM partners WHERE code LIKE 'FULL%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
    pool.close().await;
    assert!(
        crate::process::emails_in(&mailbox)
            .iter()
            .all(|(to, _)| !to.starts_with("full")),
        "no email for a refused onboarding"
    );
    no_secrets_in(&node.log(), &[]);
    eprintln!("FAULT-RESULT|disk full (8 MiB tmpfs)|sqlite|5|2|0|3|0|3 onboardings refused with 503 while full; reads served; writes resumed");
    drop(node);
}

#[tokio::test]
async fn a_clock_step_of_ten_minutes_on_one_node_behaves_as_documented() {
    use crate::cluster::{onboarded_on, spawn_nodes, wait_for};
    use crate::helpers::*;
    use serde_json::json;
    let email = "ops@clockstep.example";
    let nodes = spawn_nodes(2, |_| {}).await;
    let partner = onboarded_on(&nodes, "CLOCKSTEP", email).await;
    let node0_now =
        || keyward_server::clock::millis(keyward_server::clock::Clock::now(&nodes[0].clock));
    let regenerate = |with: Partner| {
        let app = &nodes[0];
        async move {
            let body = json!({"email": email, "partner_code": "CLOCKSTEP", "nonce": uuid_like()});
            app.signed(REGENERATE, &body, &with.public_key, &with.secret_key)
                .await
        }
    };
    for step in [10i64, -10] {
        nodes[1].clock.advance(chrono::TimeDelta::minutes(step));
        // A timestamp from the other node's clock is 10 minutes off here: stale_request, and
        // the answer says by how much. Without a timestamp the request is fine.
        let body = json!({"timestamp": node0_now()});
        let response = nodes[1]
            .signed(WHOAMI, &body, &partner.public_key, &partner.secret_key)
            .await;
        let (status, code, answer) = error_of(response).await;
        assert_eq!((status, code.as_str()), (401, "stale_request"));
        let skew = answer["data"]["skew_ms"].as_i64().unwrap();
        assert!(
            (skew + step * 60_000).abs() < 5_000,
            "skew {skew} for a step of {step} min"
        );
        assert_eq!(nodes[1].whoami(&partner).await.status(), 200);
        nodes[1].clock.advance(chrono::TimeDelta::minutes(-step));
    }
    // A regeneration link (1 h) issued by node 0 is usable on node 1 ten minutes ahead.
    assert_eq!(regenerate(partner.clone()).await.status(), 200);
    wait_for(&nodes, email, 2).await;
    nodes[1].clock.advance(chrono::TimeDelta::minutes(10));
    let outcomes = redeem_each(&nodes, 1, "CLOCKSTEP").await;
    assert_eq!(
        outcomes.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "{outcomes:?}"
    );
    let new = outcomes.into_iter().find_map(|(_, p)| p).unwrap();
    assert_eq!(nodes[0].whoami(&new).await.status(), 200);
    // A step past a link's life expires it, on the node whose clock moved.
    assert_eq!(regenerate(new.clone()).await.status(), 200);
    wait_for(&nodes, email, 4).await;
    nodes[1].clock.advance(chrono::TimeDelta::minutes(61));
    let outcomes = redeem_each(&nodes, 1, "CLOCKSTEP").await;
    assert!(outcomes.iter().all(|(s, _)| *s == 410), "{outcomes:?}");
    eprintln!("FAULT-RESULT|clock step ±10 min on one node|sqlite or postgresql, 2 in-process nodes|-|-|-|-|0|stale_request with skew_ms; links usable within their lifetime, expired past it");
}

/// Tries every regeneration link any node emailed, on `nodes[on]`: the status of each, and the
/// new keys where one worked.
async fn redeem_each(
    nodes: &[crate::helpers::TestApp],
    on: usize,
    code: &str,
) -> Vec<(u16, Option<crate::helpers::Partner>)> {
    let links: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.mailbox.emails())
        .filter(|e| e.subject.starts_with("Regenerate"))
        .map(|e| crate::helpers::link_in_text(&e.text))
        .collect();
    let mut outcomes = Vec::new();
    for link in links {
        let body =
            serde_json::json!({"token": crate::helpers::token_of(&link), "partner_code": code});
        let response = nodes[on].post_json(crate::helpers::REDEEM, &body).await;
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let partner = (status == 200).then(|| crate::helpers::Partner {
            code: code.to_owned(),
            partner_id: body["data"]["partner_id"].as_str().unwrap().to_owned(),
            public_key: body["data"]["public_key"].as_str().unwrap().to_owned(),
            secret_key: body["data"]["secret_key"].as_str().unwrap().to_owned(),
        });
        outcomes.push((status, partner));
    }
    outcomes
}
