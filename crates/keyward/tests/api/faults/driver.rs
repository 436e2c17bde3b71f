//! A load driver: workers that keep onboarding, redeeming, regenerating (signed and lost keys)
//! and calling WhoAmI and the verify API at a steady pace against one or more nodes, and record
//! every answer they got. The fault tests audit the database and the mailbox against it.

use crate::helpers::*;
use crate::process::emails_in;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One answer a worker got. `status` 0: no answer (connection refused or reset, timeout).
#[derive(Debug, Clone)]
pub struct Answer {
    pub op: &'static str,
    pub node: usize,
    pub status: u16,
    pub code: Option<String>,
    pub partner_code: String,
    pub email: String,
    /// The public key used (signed requests) or obtained (a redemption).
    pub public_key: Option<String>,
}

/// Where the load goes and how it finds its emails.
#[derive(Clone)]
pub struct Target {
    /// The nodes' public addresses (fixed across restarts).
    pub nodes: Vec<String>,
    /// The nodes' internal addresses and a service token, for the verify API.
    pub verify: Option<(Vec<String>, String)>,
    /// Where emails land (a mailbox folder or an SMTP sink's folder).
    pub mail_dir: PathBuf,
    /// How long to wait for a link email before giving up on that partner.
    pub link_wait: Duration,
    /// Whether the nodes run the gateway (to `upstream()`): signed payouts go through it.
    pub gateway: bool,
}

/// A trivial payment API for the gateway to forward to: answers 200 with who paid. Runs
/// for the rest of the test process.
pub async fn upstream() -> String {
    use axum::http::HeaderMap;
    async fn payout(headers: HeaderMap) -> axum::Json<Value> {
        let partner = headers
            .get("keyward-partner-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        axum::Json(json!({"paid_by": partner}))
    }
    let app = axum::Router::new().fallback(payout);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

pub struct Driver {
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Driver {
    pub fn start(target: Target, workers: usize, tag: &str) -> Self {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|id| {
                let worker = Worker {
                    id,
                    tag: tag.to_owned(),
                    target: target.clone(),
                    answers: answers.clone(),
                    stop: stop.clone(),
                    client: reqwest::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .build()
                        .unwrap(),
                    seen: HashSet::new(),
                };
                tokio::spawn(worker.run())
            })
            .collect();
        Self {
            answers,
            stop,
            workers,
        }
    }

    /// Answers so far.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }

    pub async fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            let _ = worker.await;
        }
        let answers = self.answers.lock().unwrap().clone();
        answers
    }
}

struct Worker {
    id: usize,
    tag: String,
    target: Target,
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
    client: reqwest::Client,
    seen: HashSet<String>,
}

impl Worker {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    async fn run(mut self) {
        let mut round = 0;
        while !self.stopped() {
            let node = (self.id + round) % self.target.nodes.len();
            let code = format!("{}W{}R{round}", self.tag, self.id);
            let email = format!(
                "{}w{}r{round}@load.example",
                self.tag.to_lowercase(),
                self.id
            );
            round += 1;
            self.partner_round(node, &code, &email).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn partner_round(&mut self, node: usize, code: &str, email: &str) {
        let body = json!({"partner_code": code, "email": email}).to_string();
        if self
            .call("onboard", node, ONBOARD, body, None, code, email)
            .await
            != 200
        {
            return;
        }
        let Some((public, secret)) = self.link_and_redeem(node, code, email).await else {
            return;
        };
        let (mut public, mut secret) = (public, secret);
        for n in 0..2 {
            if self.stopped() {
                return;
            }
            let node = (node + n + 1) % self.target.nodes.len();
            let whoami = sign(&json!({"n": n}).to_string(), &secret);
            self.call("whoami", node, WHOAMI, whoami, Some(&public), code, email)
                .await;
            self.verify(node, &public, &secret, code, email).await;
            if self.target.gateway {
                let payout = sign(
                    &json!({"amount": "1.00", "nonce": uuid_like()}).to_string(),
                    &secret,
                );
                self.call(
                    "gateway",
                    node,
                    "/api/v1/PartnerP2P/Payout",
                    payout,
                    Some(&public),
                    code,
                    email,
                )
                .await;
            }
            let body = sign(
                &json!({"email": email, "partner_code": code, "nonce": uuid_like()}).to_string(),
                &secret,
            );
            if self
                .call(
                    "regenerate",
                    node,
                    REGENERATE,
                    body,
                    Some(&public),
                    code,
                    email,
                )
                .await
                != 200
            {
                return;
            }
            match self.link_and_redeem(node, code, email).await {
                Some(keys) => (public, secret) = keys,
                None => return,
            }
        }
        // Lost keys: always the same answer; a link goes out, nobody uses it.
        let body = json!({"partner_code": code, "email": email}).to_string();
        self.call("lost_keys", node, REGENERATE, body, None, code, email)
            .await;
    }

    async fn verify(&self, node: usize, public: &str, secret: &str, code: &str, email: &str) {
        let Some((internal, token)) = &self.target.verify else {
            return;
        };
        let request = json!({
            "authorization": format!("Bearer {public}"),
            "body": sign("{}", secret),
        });
        let sent = self
            .client
            .post(format!("{}/internal/v1/verify", internal[node]))
            .bearer_auth(token)
            .json(&request)
            .send()
            .await;
        let (status, code_seen) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or_default();
                let valid = body["data"]["valid"].as_bool();
                let code_seen = match valid {
                    Some(true) => None,
                    Some(false) => body["data"]["error"]["code"].as_str().map(str::to_owned),
                    None => body["code"].as_str().map(str::to_owned),
                };
                (status, code_seen)
            }
            Err(_) => (0, None),
        };
        self.record(Answer {
            op: "verify",
            node,
            status,
            code: code_seen,
            partner_code: code.to_owned(),
            email: email.to_owned(),
            public_key: Some(public.to_owned()),
        });
    }

    /// Waits for the newest unseen link to `email`, and redeems it.
    async fn link_and_redeem(
        &mut self,
        node: usize,
        code: &str,
        email: &str,
    ) -> Option<(String, String)> {
        let link = self.new_link(email).await?;
        self.seen.insert(link.clone());
        let body = json!({"token": token_of(&link), "partner_code": code}).to_string();
        let url = format!("{}{REDEEM}", self.target.nodes[node]);
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let (status, value) = match sent {
            Ok(response) => (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap_or_default(),
            ),
            Err(_) => (0, Value::Null),
        };
        let public = value["data"]["public_key"].as_str().map(str::to_owned);
        let secret = value["data"]["secret_key"].as_str().map(str::to_owned);
        self.record(Answer {
            op: "redeem",
            node,
            status,
            code: value["code"].as_str().map(str::to_owned),
            partner_code: code.to_owned(),
            email: email.to_owned(),
            public_key: public.clone(),
        });
        public.zip(secret)
    }

    async fn new_link(&self, email: &str) -> Option<String> {
        let re = regex::Regex::new(r"https?://\S+/link/[A-Za-z0-9_-]{43}").unwrap();
        let deadline = std::time::Instant::now() + self.target.link_wait;
        while std::time::Instant::now() < deadline && !self.stopped() {
            let found = emails_in(&self.target.mail_dir)
                .into_iter()
                .filter(|(to, _)| to.contains(email))
                .filter_map(|(_, text)| re.find(&text).map(|m| m.as_str().to_owned()))
                .find(|link| !self.seen.contains(link));
            if found.is_some() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        op: &'static str,
        node: usize,
        path: &str,
        body: String,
        public: Option<&str>,
        code: &str,
        email: &str,
    ) -> u16 {
        let mut request = self
            .client
            .post(format!("{}{path}", self.target.nodes[node]))
            .header("content-type", "application/json")
            .body(body);
        if let Some(public) = public {
            request = request.header("authorization", format!("Bearer {public}"));
        }
        let (status, code_seen) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or_default();
                (status, body["code"].as_str().map(str::to_owned))
            }
            Err(_) => (0, None),
        };
        self.record(Answer {
            op,
            node,
            status,
            code: code_seen,
            partner_code: code.to_owned(),
            email: email.to_owned(),
            public_key: public.map(str::to_owned),
        });
        status
    }

    fn record(&self, answer: Answer) {
        self.answers.lock().unwrap().push(answer);
    }
}
