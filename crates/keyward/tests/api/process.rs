//! Real processes: the `keyward` binary itself, and an SMTP server (Python's aiosmtpd).

use crate::helpers::eventually;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `keyward serve`; killed when dropped. Its stderr (the log) is collected.
pub struct ServerProcess {
    child: Child,
    pub address: String,
    /// The internal listener, `http://127.0.0.1:port`.
    pub internal_address: String,
    log: Arc<Mutex<String>>,
    /// What an operator command needs to act on this server's store.
    store_env: Vec<(String, String)>,
    /// On the PostgreSQL run, the database this process was given (dropped after it).
    _database: Option<crate::database::TestDatabase>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Starts `keyward serve` on a free port with `env`, and waits until it is ready. On the
    /// PostgreSQL run it gets a fresh database unless `env` names one.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let database = match env.iter().any(|(k, _)| *k == "KEYWARD_DATABASE_URL") {
            true => None,
            false => crate::database::postgres_server()
                .map(|server| crate::database::TestDatabase::create(&server)),
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KEYWARD_LISTEN", "127.0.0.1:0")
            .env("KEYWARD_INTERNAL_LISTEN", "127.0.0.1:0")
            .env("KEYWARD_DATA_DIR", data_dir)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut store_env = vec![(
            "KEYWARD_DATA_DIR".to_owned(),
            data_dir.display().to_string(),
        )];
        if let Some(database) = &database {
            command.env("KEYWARD_DATABASE_URL", &database.url);
            store_env.push(("KEYWARD_DATABASE_URL".into(), database.url.clone()));
        }
        for (name, value) in env {
            command.env(name, value);
            if name.starts_with("KEYWARD_DATABASE") || name.starts_with("KEYWARD_MASTER_KEY") {
                store_env.push(((*name).to_owned(), (*value).to_owned()));
            }
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not start keyward: {e}"));
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let re = regex::Regex::new(r"listen=(127\.0\.0\.1:\d+) internal=(\S+)").unwrap();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("keyward is ready") {
                    if let Some(addr) = re.captures(&line) {
                        let _ = ready_tx.send((addr[1].to_owned(), addr[2].to_owned()));
                    }
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let (address, internal) = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("keyward did not start:\n{}", log.lock().unwrap()));
        Self {
            child,
            address: format!("http://{address}"),
            internal_address: format!("http://{internal}"),
            log,
            store_env,
            _database: database,
        }
    }

    /// The process's id, to look at it through `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process at once, as a crash would (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Runs an operator command (`keyward ARGS…`) on this server's store, as an operator on
    /// the same machine would.
    pub fn operator(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("USER", "ops-tester")
            .envs(self.store_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    }

    /// A partner onboarded through the API, its link read from the mailbox folder in
    /// `data_dir`, redeemed: `(partner_id, public_key, secret_key)`.
    pub async fn partner(
        &self,
        data_dir: &Path,
        code: &str,
        email: &str,
    ) -> (String, String, String) {
        let client = reqwest::Client::new();
        let onboard = client
            .post(format!("{}{}", self.address, crate::helpers::ONBOARD))
            .json(&serde_json::json!({"partner_code": code, "email": email}))
            .send()
            .await
            .unwrap();
        assert_eq!(onboard.status(), 200);
        let mailbox = data_dir.join("mailbox");
        let link = eventually(Duration::from_secs(10), || {
            std::future::ready(
                emails_in(&mailbox)
                    .into_iter()
                    .find(|(to, _)| to.contains(email))
                    .map(|(_, text)| crate::helpers::link_in_text(&text)),
            )
        })
        .await
        .unwrap();
        let body: serde_json::Value = client
            .post(format!("{}{}", self.address, crate::helpers::REDEEM))
            .json(&serde_json::json!({"token": crate::helpers::token_of(&link), "partner_code": code}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let data = &body["data"];
        (
            data["partner_id"].as_str().unwrap().to_owned(),
            data["public_key"].as_str().unwrap().to_owned(),
            data["secret_key"].as_str().unwrap().to_owned(),
        )
    }
}

/// The text parts of the `.eml` (or Maildir) files in `dir`, oldest first.
pub fn emails_in(dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "tmp"))
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    files
        .iter()
        .filter_map(|path| {
            let raw = std::fs::read(path).ok()?;
            let parsed = mailparse::parse_mail(&raw).ok()?;
            let to = parsed
                .headers
                .iter()
                .find(|h| h.get_key_ref().eq_ignore_ascii_case("to"))?
                .get_value();
            let text = text_part(&parsed)?;
            Some((to, text))
        })
        .collect()
}

fn text_part(mail: &mailparse::ParsedMail<'_>) -> Option<String> {
    if mail.ctype.mimetype == "text/plain" {
        return mail.get_body().ok();
    }
    mail.subparts.iter().find_map(text_part)
}

/// An aiosmtpd server storing what it receives in a Maildir; killed when dropped.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    pub maildir: PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether aiosmtpd is installed. `.ci/run` installs it and sets `KEYWARD_STRICT_TESTS`, where a missing
/// server is a failure, not a skip.
pub fn aiosmtpd_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        crate::helpers::skip("the real-SMTP tests need Python's aiosmtpd: pip install aiosmtpd");
    }
    ok
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl SmtpServer {
    pub async fn start(port: u16, root: &Path) -> Self {
        let maildir = root.join("maildir");
        let child = Command::new("python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start aiosmtpd: {e}"));
        let up = eventually(Duration::from_secs(20), || {
            std::future::ready(std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        })
        .await;
        assert!(up.is_some(), "aiosmtpd did not start on port {port}");
        Self {
            child,
            port,
            maildir,
        }
    }

    /// Emails received so far: (To, text part).
    pub fn received(&self) -> Vec<(String, String)> {
        emails_in(&self.maildir.join("new"))
    }
}
