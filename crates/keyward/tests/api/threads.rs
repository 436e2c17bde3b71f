//! The request threads of `keyward serve` as the kernel sees them (`src/runtime.rs`): with
//! `KEYWARD_PIN_WORKERS=on`, pinned one per CPU when there is one per CPU of the process's
//! mask; left to the kernel otherwise, and by default.

use crate::helpers::eventually;
use crate::process::ServerProcess;
use std::process::Command;
use std::time::Duration;

/// The CPUs in a `/proc/…/status` file's `Cpus_allowed_list` (such as `0-3,6`).
fn allowed_cpus(status: &str) -> Vec<usize> {
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("a Cpus_allowed_list line")
        .trim();
    let mut cpus = Vec::new();
    for range in list.split(',').filter(|r| !r.is_empty()) {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        cpus.extend(first.parse::<usize>().unwrap()..=last.parse::<usize>().unwrap());
    }
    cpus
}

/// Each of the process's threads: its name and the CPUs it may run on.
fn threads(pid: u32) -> Vec<(String, Vec<usize>)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            Some((name.trim().to_owned(), allowed_cpus(&status)))
        })
        .collect()
}

/// The CPUs each of the process's tokio threads may run on.
fn tokio_threads(pid: u32) -> Vec<Vec<usize>> {
    threads(pid)
        .into_iter()
        .filter(|(name, _)| name == "tokio-rt-worker")
        .map(|(_, cpus)| cpus)
        .collect()
}

fn own_cpus() -> Vec<usize> {
    allowed_cpus(&std::fs::read_to_string("/proc/self/status").unwrap())
}

#[tokio::test]
async fn each_request_thread_gets_a_cpu_of_its_own_when_there_is_one_per_cpu() {
    let cpus = own_cpus();
    if cpus.len() < 2 {
        eprintln!("one CPU: there is nothing to pin a thread apart from");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let workers = cpus.len().to_string();
    let server = ServerProcess::start(
        dir.path(),
        &[
            ("KEYWARD_PIN_WORKERS", "on"),
            ("TOKIO_WORKER_THREADS", &workers),
        ],
    );
    // Each worker pins itself the first time it parks, which an idle server's do at once.
    let pinned = eventually(Duration::from_secs(20), || {
        let mut pinned: Vec<usize> = tokio_threads(server.pid())
            .into_iter()
            .filter(|allowed| allowed.len() == 1)
            .map(|allowed| allowed[0])
            .collect();
        pinned.sort_unstable();
        std::future::ready((pinned.len() == cpus.len()).then_some(pinned))
    })
    .await;
    assert_eq!(pinned, Some(cpus.clone()), "one worker on each CPU");
    assert!(
        server.log().contains("request threads pinned"),
        "{}",
        server.log()
    );
    // Requests that use the database are served, and no other thread is pinned: not tokio's
    // blocking threads, which a pinned worker may start, nor SQLite's connection threads,
    // all opened with the store.
    // Concurrent, so that the pool needs several connections at once.
    let client = reqwest::Client::new();
    let onboarded = (0..32).map(|n| {
        let body = serde_json::json!({"partner_code": format!("PIN{n}"), "email": format!("ops{n}@pin.example")});
        client
            .post(format!("{}{}", server.address, crate::helpers::ONBOARD))
            .json(&body)
            .send()
    });
    for onboard in futures::future::join_all(onboarded).await {
        assert_eq!(onboard.unwrap().status(), 200);
    }
    // A thread just started runs its start hook an instant later: what holds is what settles.
    let only_workers = |all: &[(String, Vec<usize>)]| {
        let pinned: Vec<&(String, Vec<usize>)> =
            all.iter().filter(|(_, allowed)| *allowed != cpus).collect();
        pinned.len() == cpus.len() && pinned.iter().all(|(name, _)| name == "tokio-rt-worker")
    };
    let settled = eventually(Duration::from_secs(10), || {
        let all = threads(server.pid());
        std::future::ready(only_workers(&all).then_some(()))
    })
    .await;
    let all = threads(server.pid());
    assert!(settled.is_some(), "only the workers are pinned: {all:?}");
}

#[tokio::test]
async fn threads_are_left_to_the_kernel_by_default_or_when_they_do_not_match_the_cpus() {
    let cpus = own_cpus();
    let workers = cpus.len().to_string();
    let fewer = (cpus.len().max(2) - 1).to_string();
    for env in [
        vec![("TOKIO_WORKER_THREADS", workers.as_str())],
        vec![
            ("KEYWARD_PIN_WORKERS", "off"),
            ("TOKIO_WORKER_THREADS", workers.as_str()),
        ],
        vec![
            ("KEYWARD_PIN_WORKERS", "on"),
            ("TOKIO_WORKER_THREADS", fewer.as_str()),
        ],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(dir.path(), &env);
        let client = reqwest::Client::new();
        for _ in 0..20 {
            let health = client
                .get(format!("{}/healthz", server.address))
                .send()
                .await
                .unwrap();
            assert_eq!(health.status(), 200);
        }
        // The decision is made before the runtime starts, and logged when it pins.
        assert!(!server.log().contains("request threads pinned"), "{env:?}");
        let threads = tokio_threads(server.pid());
        assert!(!threads.is_empty());
        assert!(
            threads.iter().all(|allowed| *allowed == cpus),
            "{env:?}: {threads:?}"
        );
    }
}

#[test]
fn an_unknown_pinning_setting_stops_the_server_with_what_it_may_be() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("serve")
        .env("KEYWARD_DATA_DIR", dir.path())
        .env("KEYWARD_LISTEN", "127.0.0.1:0")
        .env("KEYWARD_PIN_WORKERS", "sometimes")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("KEYWARD_PIN_WORKERS must be on or off"),
        "{stderr}"
    );
}
