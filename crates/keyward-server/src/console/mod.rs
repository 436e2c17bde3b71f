//! The operators' console (SPEC §10.1), on the internal listener when `KEYWARD_CONSOLE` is on:
//! server-rendered pages behind an OpenID Connect login. Sessions live in the database (any
//! node serves any session); the cookie is `HttpOnly`, `SameSite=Strict` and `Secure` on https;
//! every form carries the session's CSRF token; every action runs through the same flows as
//! the CLI, audited as `operator:<email>`.

pub mod oidc;
mod pages;

use crate::clock::millis;
use crate::flows::admin::{self, Operator};
use crate::flows::{service_tokens, webhooks};
use crate::state::AppState;
use crate::store::{AuditFilter, ConsoleLogin, ConsoleSession, PartnerFilter};
use axum::extract::{FromRequestParts, Path, Query, RawForm, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use keyward_core::{AllowedIps, KeyHash, PartnerCode, PartnerStatus};
use oidc::Role;
use rand::RngCore;
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// The session cookie (`SameSite=Strict`).
const SESSION_COOKIE: &str = "keyward_console";
/// Binds a login to the browser that began it (`SameSite=Lax`: it must come back with the
/// identity provider's redirect, which is a cross-site navigation).
const LOGIN_COOKIE: &str = "keyward_console_login";
/// A session ends after 30 minutes without a request, and 8 hours after the login.
const IDLE_MS: i64 = 30 * 60_000;
const ABSOLUTE_MS: i64 = 8 * 3_600_000;
/// Partners a search shows.
pub const LIST_LIMIT: usize = 50;
/// Audit events a page shows.
const AUDIT_LIMIT: i64 = 200;

pub fn router(state: AppState) -> Router<AppState> {
    // A login writes a row and its callback asks the provider: the per-IP limit of the
    // public routes that do work for anyone.
    let login = Router::new()
        .route("/console/login", get(login))
        .route("/console/callback", get(callback))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            crate::http::ip_rate_limit,
        ));
    Router::new()
        .merge(login)
        .route(
            "/console",
            get(|| async { Redirect::to("/console/partners") }),
        )
        .route(pages::STYLESHEET_PATH, get(stylesheet))
        .route("/console/logout", post(logout))
        .route("/console/partners", get(partners))
        .route("/console/partners/invite", post(invite))
        .route("/console/leaks", post(report_leak))
        .route("/console/partners/{code}", get(partner))
        .route("/console/partners/{code}/{action}", post(partner_action))
        .route("/console/audit", get(audit))
        .route("/console/outbox", get(outbox))
        .route("/console/outbox/retry", post(outbox_retry))
        .route(
            "/console/service-tokens",
            get(service_tokens_page).post(create_token),
        )
        .route("/console/service-tokens/revoke", post(revoke_token))
        .route("/console/webhooks", get(webhooks_page).post(add_webhook))
        .route("/console/webhooks/remove", post(remove_webhook))
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::STYLESHEET,
    )
        .into_response()
}

/// 409 for a page that says an action could not be done, else 200.
fn page_status(error: Option<&str>) -> StatusCode {
    if error.is_some() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    }
}

/// An HTML page with a status.
fn html(status: StatusCode, markup: maud::Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

fn refused(status: StatusCode, title: &str, why: &str) -> Response {
    html(status, pages::refused(title, why))
}

fn unavailable(error: impl std::fmt::Display) -> Response {
    tracing::error!(error = %error, "the console could not read or write the database");
    refused(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again",
        "keyward could not reach its database just now.",
    )
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    same_site: &str,
    max_age: Option<i64>,
) -> HeaderValue {
    let secure = state
        .settings
        .console
        .as_ref()
        .is_some_and(crate::config::ConsoleSettings::https);
    let mut text = format!("{name}={value}; Path=/console; HttpOnly; SameSite={same_site}");
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// 32 random bytes, URL-safe base64: session tokens and CSRF tokens.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A signed-in person, from the session cookie. Without a live session a page (GET) sends
/// the browser to the login, and anything else is refused: never a page without a session.
pub struct Signed {
    pub session: ConsoleSession,
    pub role: Role,
    token: KeyHash,
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let now = millis(state.clock.now());
        let found = match cookie(&parts.headers, SESSION_COOKIE) {
            Some(token) => {
                let token = KeyHash::of(&token);
                state
                    .store
                    .console_session(&token, now, IDLE_MS, ABSOLUTE_MS)
                    .await
                    .map_err(unavailable)?
                    .and_then(|session| Role::parse(&session.role).map(|role| (session, role)))
                    .map(|(session, role)| Signed {
                        session,
                        role,
                        token,
                    })
            }
            None => None,
        };
        match found {
            Some(signed) => Ok(signed),
            None if parts.method == Method::GET => {
                Err(Redirect::to("/console/login").into_response())
            }
            None => Err(refused(
                StatusCode::FORBIDDEN,
                "Not signed in",
                "Your session has ended: sign in again. Nothing was changed.",
            )),
        }
    }
}

impl Signed {
    /// The operator as the flows record it: `operator:<email>` in the audit log.
    fn operator<'a>(&'a self, reason: Option<&'a str>) -> Operator<'a> {
        Operator {
            name: &self.session.email,
            reason,
        }
    }

    /// The form of a POST, once its CSRF token and the person's role are checked. A refusal
    /// changes nothing.
    fn checked_form(
        &self,
        form: &RawForm,
        needs: Role,
    ) -> Result<HashMap<String, String>, Box<Response>> {
        let fields: HashMap<String, String> =
            serde_urlencoded::from_bytes(&form.0).map_err(|_| {
                Box::new(refused(
                    StatusCode::BAD_REQUEST,
                    "Not a form",
                    "The request was not a form of this console. Nothing was changed.",
                ))
            })?;
        let token = fields.get("csrf").map(String::as_str).unwrap_or_default();
        if !same(token, &self.session.csrf_token) {
            return Err(Box::new(refused(
                StatusCode::FORBIDDEN,
                "Refused",
                "The form did not come from this session (its CSRF token is missing or wrong). Nothing was changed.",
            )));
        }
        if self.role < needs {
            return Err(Box::new(refused(
                StatusCode::FORBIDDEN,
                "Not allowed",
                &format!(
                    "This needs the {} role; you are a {}. Nothing was changed.",
                    needs.as_str(),
                    self.role.as_str()
                ),
            )));
        }
        Ok(fields)
    }
}

/// A form field, trimmed; `None` when empty.
fn field<'a>(fields: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    fields.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Login

async fn login(State(state): State<AppState>) -> Response {
    let Some(oidc) = state.console.as_ref() else {
        return refused(StatusCode::NOT_FOUND, "No console", "The console is off.");
    };
    let begun = match oidc.begin().await {
        Ok(begun) => begun,
        Err(e) => {
            tracing::warn!(error = %e, "the console's login could not begin");
            return refused(
                StatusCode::BAD_GATEWAY,
                "Sign-in unavailable",
                "The identity provider could not be reached. Try again in a moment.",
            );
        }
    };
    let now = millis(state.clock.now());
    let login = ConsoleLogin {
        nonce: begun.nonce,
        pkce_verifier: begun.pkce_verifier,
    };
    if let Err(e) = state
        .store
        .insert_console_login(&KeyHash::of(&begun.state), &login, now)
        .await
    {
        return unavailable(e);
    }
    let mut response = Redirect::to(begun.url.as_str()).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, LOGIN_COOKIE, &begun.state, "Lax", Some(600)),
    );
    response
}

async fn callback(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(oidc) = state.console.as_ref() else {
        return refused(StatusCode::NOT_FOUND, "No console", "The console is off.");
    };
    if params.contains_key("error") {
        return refused(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            "The identity provider did not sign you in.",
        );
    }
    let (Some(code), Some(returned_state)) = (params.get("code"), params.get("state")) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The answer of the identity provider was incomplete.",
        );
    };
    // The browser that began this login must be the one finishing it.
    let began_here = cookie(&headers, LOGIN_COOKIE).is_some_and(|s| same(&s, returned_state));
    if !began_here {
        return refused(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "This sign-in was not started in this browser, or was tampered with.",
        );
    }
    let now = millis(state.clock.now());
    let login = match state
        .store
        .take_console_login(&KeyHash::of(returned_state), now)
        .await
    {
        Ok(Some(login)) => login,
        Ok(None) => {
            return refused(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "This sign-in was used already or took too long.",
            )
        }
        Err(e) => return unavailable(e),
    };
    let identity = match oidc
        .finish(code.clone(), &login.nonce, login.pkce_verifier)
        .await
    {
        Ok(identity) => identity,
        Err(e) => {
            tracing::warn!(error = %e, "a console sign-in was refused");
            return refused(
                StatusCode::UNAUTHORIZED,
                "Sign-in failed",
                "The identity provider's answer could not be verified.",
            );
        }
    };
    let Some(role) = Role::of(&identity.groups, oidc.settings()) else {
        tracing::info!(email = %identity.email, "a console sign-in by someone in none of the console's groups was refused");
        return refused(
            StatusCode::FORBIDDEN,
            "No access",
            &format!(
                "{} is in none of the groups that may use this console. Ask an administrator to add you.",
                identity.email
            ),
        );
    };
    let token = random_token();
    let session = ConsoleSession {
        email: identity.email,
        role: role.as_str().to_owned(),
        csrf_token: random_token(),
        created_at: now,
        last_seen_at: now,
    };
    if let Err(e) = state
        .store
        .insert_console_session(&KeyHash::of(&token), &session, ABSOLUTE_MS)
        .await
    {
        return unavailable(e);
    }
    tracing::info!(email = %session.email, role = %session.role, "signed in to the console");
    let mut response = html(StatusCode::OK, pages::continue_page());
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, &token, "Strict", None),
    );
    cookies.append(
        header::SET_COOKIE,
        set_cookie(&state, LOGIN_COOKIE, "", "Lax", Some(0)),
    );
    response
}

async fn logout(State(state): State<AppState>, signed: Signed, form: RawForm) -> Response {
    if let Err(refusal) = signed.checked_form(&form, Role::Viewer) {
        return *refusal;
    }
    if let Err(e) = state.store.delete_console_session(&signed.token).await {
        return unavailable(e);
    }
    let mut response = refused(StatusCode::OK, "Signed out", "Your session has ended.");
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, "", "Strict", Some(0)),
    );
    response
}

// ---------------------------------------------------------------------------------------------
// Partners

/// What a redirect after an action says (fixed texts: nothing of the URL is shown).
fn done_text(key: Option<&String>) -> Option<&'static str> {
    Some(match key?.as_str() {
        "suspended" => "Suspended: its requests are refused on every node.",
        "activated" => "Active again.",
        "revoked" => "Every key pair is revoked, on every node.",
        "revoked-notified" => "Every key pair is revoked, and a regeneration link was emailed.",
        "allow-list" => "The allow-list is set; the partner was emailed.",
        "resent" => "A fresh onboarding link was emailed.",
        "released" => "Released: the code is free.",
        "retried" => "The dead letters are queued again.",
        "token-revoked" => "The service token is revoked, on every node.",
        "webhook-removed" => "The endpoint is removed.",
        "invited" => "Invited: the onboarding link was emailed.",
        _ => return None,
    })
}

async fn partners(
    State(state): State<AppState>,
    signed: Signed,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let done = done_text(params.get("done"));
    partners_page(&state, &signed, &params, done, None).await
}

async fn partners_page(
    state: &AppState,
    signed: &Signed,
    params: &HashMap<String, String>,
    done: Option<&str>,
    error: Option<&str>,
) -> Response {
    let q = params.get("q").map(|s| s.trim()).unwrap_or_default();
    let status_text = params.get("status").map(String::as_str).unwrap_or_default();
    let status = PartnerStatus::parse(status_text);
    let limit = i64::try_from(LIST_LIMIT).unwrap_or(50);
    let mut found = Vec::new();
    // A fragment of the code or of the email: two searches, merged, newest first.
    let filters = if q.is_empty() {
        vec![PartnerFilter {
            status,
            limit,
            ..PartnerFilter::default()
        }]
    } else {
        vec![
            PartnerFilter {
                status,
                code_like: Some(q.to_owned()),
                limit,
                ..PartnerFilter::default()
            },
            PartnerFilter {
                status,
                email_like: Some(q.to_owned()),
                limit,
                ..PartnerFilter::default()
            },
        ]
    };
    for filter in filters {
        match admin::list(&state.store, &filter).await {
            Ok(rows) => found.extend(rows),
            Err(e) => return unavailable(e),
        }
    }
    found.sort_by_key(|p| std::cmp::Reverse(p.partner.created_at));
    let mut seen = std::collections::HashSet::new();
    found.retain(|p| seen.insert(p.partner.id.clone()));
    found.truncate(LIST_LIMIT);
    let status = page_status(error);
    html(
        status,
        pages::partners(signed, q, status_text, &found, pages::flash(done, error)),
    )
}

/// Creates a pending partner and emails its onboarding link (`keyward partner invite`).
async fn invite(State(state): State<AppState>, signed: Signed, form: RawForm) -> Response {
    let fields = match signed.checked_form(&form, Role::Operator) {
        Ok(fields) => fields,
        Err(refusal) => return *refusal,
    };
    let none = HashMap::new();
    let code = field(&fields, "code").and_then(PartnerCode::parse);
    let email = field(&fields, "email").and_then(keyward_core::Email::parse);
    let (Some(code), Some(email)) = (code, email) else {
        let why = "Give a partner code (1 to 64 of A-Z a-z 0-9 . _ -) and a valid email address.";
        return partners_page(&state, &signed, &none, None, Some(why)).await;
    };
    let by = signed.operator(field(&fields, "reason"));
    match admin::invite(&state.ctx, &code, &email, by).await {
        Ok(_) => Redirect::to(&format!("/console/partners/{code}?done=invited")).into_response(),
        Err(e @ admin::AdminError::Store(_)) => unavailable(e),
        Err(e) => partners_page(&state, &signed, &none, None, Some(&e.to_string())).await,
    }
}

/// A key found in public (`keyward leak report`): revoked on every node when this answers
/// (or only emailed, with `KEYWARD_LEAK_ACTION=notify`).
async fn report_leak(State(state): State<AppState>, signed: Signed, form: RawForm) -> Response {
    use crate::flows::leaks::{self, Leak, Outcome, Reporter};
    let fields = match signed.checked_form(&form, Role::Operator) {
        Ok(fields) => fields,
        Err(refusal) => return *refusal,
    };
    let none = HashMap::new();
    let token = field(&fields, "token").unwrap_or_default();
    if keyward_core::scan::TokenKind::of(token).is_none() {
        let why = "That is not a keyward token (a prefix, 30 letters and digits, a checksum): nothing was reported.";
        return partners_page(&state, &signed, &none, None, Some(why)).await;
    }
    let leak = Leak {
        token,
        url: field(&fields, "url"),
        source: None,
    };
    let reporter = Reporter::Operator(&signed.session.email);
    let verdict = match leaks::report(&state.ctx, &[leak], reporter).await {
        Ok(mut verdicts) => verdicts.pop(),
        Err(e) => return unavailable(e),
    };
    let text = match verdict.map(|v| v.outcome) {
        Some(Outcome::Revoked { partner, link }) => format!(
            "Revoked on every node; {partner} was emailed{}.",
            if link { " a link to new keys" } else { "" }
        ),
        Some(Outcome::Notified { partner }) => {
            format!("{partner} was emailed; its key still works (KEYWARD_LEAK_ACTION=notify).")
        }
        Some(Outcome::AlreadyRevoked { partner }) => {
            format!("That key of {partner} was revoked already; the report is in the audit log.")
        }
        Some(Outcome::ServiceToken { name }) => {
            format!("That is the service token {name}: revoke it on the Service tokens page.")
        }
        Some(Outcome::NotOurs) | None => {
            "Not a token this keyward issued: nothing to do.".to_owned()
        }
    };
    partners_page(&state, &signed, &none, Some(&text), None).await
}

async fn partner_page(
    state: &AppState,
    signed: &Signed,
    code: &str,
    done: Option<&str>,
    error: Option<&str>,
) -> Response {
    let Some(code) = PartnerCode::parse(code) else {
        return refused(
            StatusCode::NOT_FOUND,
            "No such partner",
            "That is not a partner code.",
        );
    };
    match admin::show(&state.store, &code).await {
        Ok(details) => {
            let status = page_status(error);
            let now = millis(state.clock.now());
            html(
                status,
                pages::partner(signed, &details, now, pages::flash(done, error)),
            )
        }
        Err(admin::AdminError::NoSuchPartner(_)) => refused(
            StatusCode::NOT_FOUND,
            "No such partner",
            "No partner has this code.",
        ),
        Err(e) => unavailable(e),
    }
}

async fn partner(
    State(state): State<AppState>,
    signed: Signed,
    Path(code): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    partner_page(&state, &signed, &code, done_text(params.get("done")), None).await
}

async fn partner_action(
    State(state): State<AppState>,
    signed: Signed,
    Path((code_text, action)): Path<(String, String)>,
    form: RawForm,
) -> Response {
    let fields = match signed.checked_form(&form, Role::Operator) {
        Ok(fields) => fields,
        Err(refusal) => return *refusal,
    };
    let Some(code) = PartnerCode::parse(&code_text) else {
        return refused(
            StatusCode::NOT_FOUND,
            "No such partner",
            "That is not a partner code.",
        );
    };
    let reason = field(&fields, "reason");
    // Destructive actions say why (SPEC §10.1).
    if matches!(action.as_str(), "suspend" | "revoke-keys" | "release") && reason.is_none() {
        return partner_page(
            &state,
            &signed,
            &code_text,
            None,
            Some("Give a reason: it goes into the audit log."),
        )
        .await;
    }
    let by = signed.operator(reason);
    let done = match action.as_str() {
        "suspend" => admin::suspend(&state.ctx, &code, by)
            .await
            .map(|_| "suspended"),
        "activate" => admin::activate(&state.ctx, &code, by)
            .await
            .map(|_| "activated"),
        "release" => admin::release(&state.ctx, &code, by)
            .await
            .map(|_| "released"),
        "resend-link" => admin::resend_link(&state.ctx, &code, by)
            .await
            .map(|_| "resent"),
        "revoke-keys" => {
            let notify = field(&fields, "notify").is_some();
            admin::revoke_keys(&state.ctx, &code, by, notify)
                .await
                .map(|r| {
                    if r.notified {
                        "revoked-notified"
                    } else {
                        "revoked"
                    }
                })
        }
        "allow-ips" => {
            let text = field(&fields, "cidrs").unwrap_or_default();
            match AllowedIps::parse(text.split(',').map(str::trim).filter(|s| !s.is_empty())) {
                Ok(list) => admin::set_allowed_ips(&state.ctx, &code, list, by)
                    .await
                    .map(|_| "allow-list"),
                Err(e) => {
                    return partner_page(&state, &signed, &code_text, None, Some(&e.to_string()))
                        .await
                }
            }
        }
        _ => {
            return refused(
                StatusCode::NOT_FOUND,
                "No such action",
                "The console has no such action.",
            )
        }
    };
    match done {
        // Released: the partner is gone, so back to the search.
        Ok("released") => Redirect::to("/console/partners?done=released").into_response(),
        Ok(key) => Redirect::to(&format!("/console/partners/{code}?done={key}")).into_response(),
        Err(e @ admin::AdminError::Store(_)) => unavailable(e),
        Err(e) => partner_page(&state, &signed, &code_text, None, Some(&e.to_string())).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Audit, outbox

async fn audit(
    State(state): State<AppState>,
    signed: Signed,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let partner_text = params.get("partner").map(|s| s.trim()).unwrap_or_default();
    let event = params.get("event").map(|s| s.trim()).unwrap_or_default();
    let filter = AuditFilter {
        event: (!event.is_empty()).then(|| event.to_owned()),
        limit: AUDIT_LIMIT,
        newest_first: true,
        ..AuditFilter::default()
    };
    let partner = if partner_text.is_empty() {
        None
    } else {
        match PartnerCode::parse(partner_text) {
            Some(code) => Some(code),
            None => {
                let flash = pages::flash(None, Some("That is not a partner code."));
                return html(
                    StatusCode::OK,
                    pages::audit(&signed, partner_text, event, &[], flash),
                );
            }
        }
    };
    match admin::audit(&state.store, partner.as_ref(), filter).await {
        Ok(events) => html(
            StatusCode::OK,
            pages::audit(
                &signed,
                partner_text,
                event,
                &events,
                pages::flash(None, None),
            ),
        ),
        Err(admin::AdminError::NoSuchPartner(_)) => {
            let flash = pages::flash(None, Some("No partner has this code."));
            html(
                StatusCode::OK,
                pages::audit(&signed, partner_text, event, &[], flash),
            )
        }
        Err(e) => unavailable(e),
    }
}

async fn outbox(
    State(state): State<AppState>,
    signed: Signed,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let now = millis(state.clock.now());
    let (backlog, dead) = match (
        state.store.outbox_backlog(now).await,
        state.store.dead_emails().await,
    ) {
        (Ok(backlog), Ok(dead)) => (backlog, dead),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let flash = pages::flash(done_text(params.get("done")), None);
    html(
        StatusCode::OK,
        pages::outbox(&signed, &backlog, &dead, flash),
    )
}

async fn outbox_retry(State(state): State<AppState>, signed: Signed, form: RawForm) -> Response {
    if let Err(refusal) = signed.checked_form(&form, Role::Operator) {
        return *refusal;
    }
    let now = millis(state.clock.now());
    match state.store.retry_dead_emails(now).await {
        Ok(_) => {
            state.outbox_wake.notify_one();
            tracing::info!(operator = %signed.session.email, "dead letters queued again from the console");
            Redirect::to("/console/outbox?done=retried").into_response()
        }
        Err(e) => unavailable(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Service tokens and webhooks (admins act; everyone sees)

async fn tokens_page(
    state: &AppState,
    signed: &Signed,
    created: Option<(&str, &str)>,
    done: Option<&str>,
    error: Option<&str>,
) -> Response {
    match service_tokens::list(&state.store).await {
        Ok(tokens) => html(
            page_status(error),
            pages::service_tokens(signed, &tokens, created, pages::flash(done, error)),
        ),
        Err(e) => unavailable(e),
    }
}

async fn service_tokens_page(
    State(state): State<AppState>,
    signed: Signed,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    tokens_page(&state, &signed, None, done_text(params.get("done")), None).await
}

async fn create_token(State(state): State<AppState>, signed: Signed, form: RawForm) -> Response {
    let fields = match signed.checked_form(&form, Role::Admin) {
        Ok(fields) => fields,
        Err(refusal) => return *refusal,
    };
    let name = field(&fields, "name").unwrap_or_default();
    let made = service_tokens::create(
        &state.store,
        name,
        &signed.session.email,
        state.clock.now(),
        state.settings.key_cache,
    )
    .await;
    match made {
        Ok(token) => {
            let text = secrecy::ExposeSecret::expose_secret(&token).to_owned();
            tokens_page(&state, &signed, Some((name, &text)), None, None).await
        }
        Err(e) => tokens_page(&state, &signed, None, None, Some(&e.to_string())).await,
    }
}

async fn revoke_token(State(state): State<AppState>, signed: Signed, form: RawForm) -> Response {
    let fields = match signed.checked_form(&form, Role::Admin) {
        Ok(fields) => fields,
        Err(refusal) => return *refusal,
    };
    let name = field(&fields, "name").unwrap_or_default();
    let Some(reason) = field(&fields, "reason") else {
        return tokens_page(
            &state,
            &signed,
            None,
            None,
            Some("Give a reason: it goes into the audit log."),
        )
        .await;
    };
    let revoked = service_tokens::revoke(
        &state.store,
        name,
        &signed.session.email,
        Some(reason),
        state.clock.now(),
        state.settings.key_cache,
    )
    .await;
    match revoked {
        Ok(()) => Redirect::to("/console/service-tokens?done=token-revoked").into_response(),
        Err(e) => tokens_page(&state, &signed, None, None, Some(&e.to_string())).await,
    }
}

async fn hooks_page(
    state: &AppState,
    signed: &Signed,
    added: Option<(&str, &str)>,
    done: Option<&str>,
    error: Option<&str>,
) -> Response {
    match webhooks::list(&state.ctx).await {
        Ok(endpoints) => html(
            page_status(error),
            pages::webhooks(signed, &endpoints, added, pages::flash(done, error)),
        ),
        Err(e) => unavailable(e),
    }
}

async fn webhooks_page(
    State(state): State<AppState>,
    signed: Signed,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    hooks_page(&state, &signed, None, done_text(params.get("done")), None).await
}

async fn add_webhook(State(state): State<AppState>, signed: Signed, form: RawForm) -> Response {
    let fields = match signed.checked_form(&form, Role::Admin) {
        Ok(fields) => fields,
        Err(refusal) => return *refusal,
    };
    let url = field(&fields, "url").unwrap_or_default();
    let events: Vec<String> = field(&fields, "events")
        .unwrap_or_default()
        .split(',')
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    match webhooks::add(&state.ctx, url, &events, &signed.session.email).await {
        Ok(added) => {
            hooks_page(
                &state,
                &signed,
                Some((&added.endpoint.url, &added.secret)),
                None,
                None,
            )
            .await
        }
        Err(e) => hooks_page(&state, &signed, None, None, Some(&e.to_string())).await,
    }
}

async fn remove_webhook(State(state): State<AppState>, signed: Signed, form: RawForm) -> Response {
    let fields = match signed.checked_form(&form, Role::Admin) {
        Ok(fields) => fields,
        Err(refusal) => return *refusal,
    };
    let id = field(&fields, "id").unwrap_or_default();
    let Some(reason) = field(&fields, "reason") else {
        return hooks_page(
            &state,
            &signed,
            None,
            None,
            Some("Give a reason: it goes into the audit log."),
        )
        .await;
    };
    match webhooks::remove(&state.ctx, id, &signed.session.email, Some(reason)).await {
        Ok(_) => Redirect::to("/console/webhooks?done=webhook-removed").into_response(),
        Err(e) => hooks_page(&state, &signed, None, None, Some(&e.to_string())).await,
    }
}
