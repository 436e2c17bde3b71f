//! A fixed request mix through keyward's whole public router (every layer a served request
//! passes: trailing-slash normalisation, request ids, the trace span, security headers,
//! metrics, the body limit, authentication with a warm key cache), in process, for an
//! instruction count: `bench/instructions.sh` runs it under valgrind's callgrind, counting only
//! inside `measured_mix`, and CI fails when the count grows by more than a few percent.
//! Wall-clock time on a shared 2-core machine is too noisy to guard a gain; instructions are
//! not.
//!
//! The mix: 500 × `GET /healthz`, 500 × signed `WhoAmI` over 16 partners. Run it bare with
//! `cargo run --release --example hot_path` (it checks every answer).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use keyward_core::signature::{sign_body, MessageForm};
use keyward_core::{Email, KeyPair, PartnerCode, PartnerId};
use keyward_server::config::Settings;
use keyward_server::crypto::secret_key_aad;
use keyward_server::http::Routes;
use keyward_server::store::ImportedPartner;
use keyward_server::{Application, Overrides};
use secrecy::ExposeSecret;
use std::cell::RefCell;
use std::net::SocketAddr;
use tower::Service;

/// The allocator the binary serves with (`src/main.rs`), so allocations cost here what they
/// cost there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 500;
const PARTNERS: usize = 16;

/// One signed WhoAmI, as a partner sends it.
struct Signed {
    authorization: String,
    body: String,
}

fn request(uri: &str, signed: Option<&Signed>) -> Request<Body> {
    let mut builder = Request::builder().uri(uri);
    let body = match signed {
        Some(s) => {
            builder = builder
                .method("POST")
                .header("content-type", "application/json")
                .header("authorization", &s.authorization);
            Body::from(s.body.clone())
        }
        None => Body::empty(),
    };
    let mut request = builder.body(body).unwrap();
    let peer: SocketAddr = "192.0.2.10:40000".parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

/// Sends one request as the listener does and reads its whole answer, which must be a 200.
async fn send(app: &RefCell<Routes>, request: Request<Body>) {
    // Called in place, as each connection calls its own copy.
    let answer = app.borrow_mut().call(request);
    let response = answer.await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
}

async fn mix(app: &RefCell<Routes>, partners: &[Signed]) {
    for i in 0..ROUNDS {
        send(app, request("/healthz", None)).await;
        let signed = &partners[i % partners.len()];
        send(
            app,
            request(keyward_core::wire::paths::WHOAMI, Some(signed)),
        )
        .await;
    }
}

/// What callgrind counts (`--toggle-collect=*measured_mix*`).
#[inline(never)]
fn measured_mix(runtime: &tokio::runtime::Runtime, app: &RefCell<Routes>, partners: &[Signed]) {
    runtime.block_on(mix(app, partners));
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Logs on, at the level a deployment runs (spans are made, nothing is printed).
    keyward_server::telemetry::init("info");
    let (app, partners) = runtime.block_on(async {
        let mut settings = Settings::for_tests(dir.path());
        // No entry may expire while callgrind runs (it is ~50× slower than the machine).
        settings.key_cache = std::time::Duration::from_secs(60);
        let application = Application::build_with(settings, Overrides::default())
            .await
            .unwrap();
        let state = application.state().clone();
        let (store, cipher) = (state.store.clone(), state.cipher().unwrap().clone());
        let mut imported = Vec::new();
        let mut partners = Vec::new();
        for i in 0..PARTNERS {
            let keys = KeyPair::generate(&mut rand::rngs::OsRng);
            let id = PartnerId::new_v7();
            let key_id = uuid::Uuid::now_v7().to_string();
            let secret = keys.secret.expose_secret();
            imported.push(ImportedPartner {
                secret_ciphertext: cipher
                    .encrypt(secret.as_bytes(), &secret_key_aad(id.as_str(), &key_id))
                    .unwrap(),
                code: PartnerCode::parse(&format!("HOT-{i}")).unwrap(),
                email: Email::parse(&format!("p{i}@hot.example")).unwrap(),
                public_key_hash: keys.public.hash(),
                public_key_hint: keys.public.redacted(),
                secret_key_hash: keys.secret.hash(),
                created_at: chrono::Utc::now().timestamp_millis(),
                allowed_ips: None,
                legacy: false,
                key_id,
                id,
            });
            partners.push(Signed {
                authorization: format!("Bearer {}", keys.public.as_str()),
                body: sign_body(b"{}", &keys.secret, MessageForm::AsSent).unwrap(),
            });
        }
        store.import_active_partners(&imported).await.unwrap();
        (RefCell::new(keyward_server::http::app(state)), partners)
    });
    // Warm: every key in the node's cache, every lazy thing built.
    runtime.block_on(mix(&app, &partners));
    measured_mix(&runtime, &app, &partners);
}
