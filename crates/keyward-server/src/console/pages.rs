//! The console's pages (maud, server-rendered, no script). Every page but the login's
//! answers names who is signed in, and every form carries the session's CSRF token.

use super::oidc::Role;
use super::Signed;
use crate::flows::admin::PartnerDetails;
use crate::store::{
    AuditRecord, DeadEmail, KeyInfo, OutboxBacklog, PartnerSummary, ServiceTokenRecord,
    WebhookEndpoint,
};
use maud::{html, Markup, DOCTYPE};

pub const STYLESHEET: &str = include_str!("console.css");
pub const STYLESHEET_PATH: &str = "/console/assets/console.css";

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "—".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

/// Every page's head; with `next`, the page goes on by itself there (a same-site navigation).
fn head(title: &str, next: Option<&str>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="robots" content="noindex, nofollow";
            title { (title) " · keyward console" }
            link rel="stylesheet" href=(STYLESHEET_PATH);
            @if let Some(next) = next { meta http-equiv="refresh" content={ "0; url=" (next) }; }
        }
    }
}

/// A page for a signed-in person: the navigation, who they are, and a logout button.
pub fn page(title: &str, signed: &Signed, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, None))
            body {
                header class="top" {
                    a class="brand" href="/console/partners" { "keyward" }
                    nav {
                        a href="/console/partners" { "Partners" }
                        a href="/console/audit" { "Audit" }
                        a href="/console/outbox" { "Outbox" }
                        a href="/console/service-tokens" { "Service tokens" }
                        a href="/console/webhooks" { "Webhooks" }
                    }
                    div class="who" {
                        span id="who" { (signed.session.email) " · " (signed.role.as_str()) }
                        form method="post" action="/console/logout" {
                            (csrf(signed))
                            button class="link" type="submit" { "Log out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page without a session: the login's outcomes.
pub fn bare(title: &str, body: Markup) -> Markup {
    bare_with(title, None, body)
}

/// The same, optionally going on by itself to `next` (a same-site navigation).
fn bare_with(title: &str, next: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, next))
            body { main class="narrow" { p class="brand" { "keyward" } h1 { (title) } (body) } }
        }
    }
}

fn csrf(signed: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(signed.session.csrf_token); }
}

/// A message at the top of a page after an action (from the redirect's `done` or `error`).
pub fn flash(done: Option<&str>, error: Option<&str>) -> Markup {
    html! {
        @if let Some(done) = done { p class="notice" role="status" { (done) } }
        @if let Some(error) = error { p class="error" role="alert" { (error) } }
    }
}

pub fn partners(
    signed: &Signed,
    q: &str,
    status: &str,
    found: &[PartnerSummary],
    flash_: Markup,
) -> Markup {
    page(
        "Partners",
        signed,
        html! {
            (flash_)
            form method="get" action="/console/partners" class="search" {
                label for="q" { "Code or email" }
                input id="q" type="search" name="q" value=(q) placeholder="ACME or acme.example";
                label for="status" { "Status" }
                select id="status" name="status" {
                    @for s in ["", "pending", "active", "suspended"] {
                        option value=(s) selected[s == status] { @if s.is_empty() { "any" } @else { (s) } }
                    }
                }
                button type="submit" { "Find" }
            }
            @if found.is_empty() {
                p class="muted" { "No partner matches." }
            } @else {
                table {
                    thead { tr { th { "Code" } th { "Email" } th { "Status" } th { "Key" } th { "Last used" } } }
                    tbody {
                        @for p in found {
                            tr {
                                td { a href={ "/console/partners/" (p.partner.code.as_str()) } { (p.partner.code.as_str()) } }
                                td { (p.partner.email.as_str()) }
                                td { span class={ "status " (p.partner.status.as_str()) } { (p.partner.status.as_str()) } }
                                td { code { (p.key_hint.as_deref().unwrap_or("—")) }
                                     @if p.pairs.iter().any(|k| k.legacy.0) { " " span class="tag" { "legacy" } } }
                                td { (time(p.key_last_used_at)) }
                            }
                        }
                    }
                }
                @if found.len() >= super::LIST_LIMIT { p class="muted" { "The first " (super::LIST_LIMIT) "; narrow the search." } }
            }
            @if signed.role >= Role::Operator {
                h2 { "More" }
                div class="actions" {
                    form method="post" action="/console/partners/invite" {
                        h3 { "Invite a partner" }
                        p class="muted" { "Creates it pending and emails its onboarding link." }
                        (csrf(signed))
                        label for="invite-code" { "Partner code" }
                        input id="invite-code" type="text" name="code" required;
                        label for="invite-email" { "Email" }
                        input id="invite-email" type="text" name="email" required;
                        label for="invite-reason" { "Reason (optional)" }
                        input id="invite-reason" type="text" name="reason";
                        button type="submit" { "Invite" }
                    }
                    form method="post" action="/console/leaks" {
                        h3 { "Report a key found in public" }
                        p class="muted" { "A partner's pair is revoked on every node and the partner told where it was found." }
                        (csrf(signed))
                        label for="leak-token" { "The key" }
                        input id="leak-token" type="text" name="token" required autocomplete="off";
                        label for="leak-url" { "Where it was found (optional)" }
                        input id="leak-url" type="text" name="url";
                        button class="danger" type="submit" { "Report" }
                    }
                }
            }
        },
    )
}

fn key_row(key: &KeyInfo, now: i64) -> Markup {
    html! {
        tr {
            td { code { (key.public_key_hint) } @if key.legacy.0 { " " span class="tag" title="moved in with a key of the previous system; works until regenerated" { "legacy" } } }
            td { (key.kind) @if let Some(name) = &key.name { " “" (name) "”" } }
            td { (key.scopes.as_deref().filter(|s| !s.is_empty()).unwrap_or("—")) }
            td { (key.mode) }
            td { (key.state(now)) }
            td { (time(Some(key.created_at))) }
            td { (time(key.expires_at.or(key.valid_until))) }
            td { (time(key.last_used_at)) @if let Some(ip) = &key.last_used_ip { br; span class="muted" { (ip) } } }
        }
    }
}

pub fn partner(signed: &Signed, details: &PartnerDetails, now: i64, flash_: Markup) -> Markup {
    let p = &details.partner;
    let code = p.code.as_str();
    let acts = signed.role >= Role::Operator;
    let action = |what: &str| format!("/console/partners/{code}/{what}");
    page(
        &format!("Partner {code}"),
        signed,
        html! {
            (flash_)
            dl class="facts" {
                dt { "Partner ID" } dd { code { (p.id.as_str()) } }
                dt { "Email" } dd { (p.email.as_str()) }
                dt { "Status" } dd { span id="status" class={ "status " (p.status.as_str()) } { (p.status.as_str()) } @if p.invited { " (invited)" } }
                dt { "Created" } dd { (time(Some(p.created_at))) }
                dt { "Allowed IPs" } dd { @if p.allowed_ips.is_empty() { "any address" } @else { (p.allowed_ips.to_strings().join(", ")) } }
            }
            h2 { "Keys" }
            @if details.keys.is_empty() { p class="muted" { "None." } } @else {
                div class="scroll" { table {
                    thead { tr { th { "Hint" } th { "Kind" } th { "Scopes" } th { "Mode" } th { "State" } th { "Created" } th { "Expires" } th { "Last used" } } }
                    tbody { @for key in &details.keys { (key_row(key, now)) } }
                } }
            }
            h2 { "Links" }
            @if details.links.is_empty() { p class="muted" { "None." } } @else {
                div class="scroll" { table {
                    thead { tr { th { "Purpose" } th { "State" } th { "Issued" } th { "Expires" } th { "Used" } th { "From" } } }
                    tbody { @for l in &details.links { tr {
                        td { (l.purpose) } td { (l.state(now)) } td { (time(Some(l.created_at))) }
                        td { (time(Some(l.expires_at))) } td { (time(l.used_at)) } td { (l.requested_ip.as_deref().unwrap_or("—")) }
                    } } }
                } }
            }
            h2 { "Recent events" }
            @if details.events.is_empty() { p class="muted" { "None." } } @else {
                ul class="events" { @for e in &details.events {
                    li { span class="muted" { (time(Some(e.created_at))) } " " strong { (e.event) }
                         @if let Some(detail) = &e.detail { " — " (detail) } }
                } }
            }
            p { a href={ "/console/audit?partner=" (code) } { "The partner's whole audit log" } }
            @if acts {
                h2 { "Actions" }
                div class="actions" {
                    @if p.status.as_str() == "suspended" {
                        form method="post" action=(action("activate")) {
                            h3 { "Lift the suspension" }
                            (csrf(signed))
                            label for="activate-reason" { "Reason (optional)" }
                            input id="activate-reason" type="text" name="reason";
                            button type="submit" { "Activate" }
                        }
                    } @else if p.status.as_str() == "active" {
                        form method="post" action=(action("suspend")) {
                            h3 { "Suspend" }
                            p class="muted" { "Every request of the partner is refused until it is activated." }
                            (csrf(signed))
                            label for="suspend-reason" { "Reason (required)" }
                            input id="suspend-reason" type="text" name="reason" required;
                            button class="danger" type="submit" { "Suspend" }
                        }
                    }
                    form method="post" action=(action("revoke-keys")) {
                        h3 { "Revoke every key" }
                        p class="muted" { "For a leak: refused on every node when this answers." }
                        (csrf(signed))
                        label for="revoke-reason" { "Reason (required)" }
                        input id="revoke-reason" type="text" name="reason" required;
                        label class="check" { input type="checkbox" name="notify" value="on"; " Email the partner a regeneration link" }
                        button class="danger" type="submit" { "Revoke every key now" }
                    }
                    form method="post" action=(action("allow-ips")) {
                        h3 { "IP allow-list" }
                        (csrf(signed))
                        label for="allow-ips" { "Allowed IPs (comma-separated; empty: any address)" }
                        input id="allow-ips" type="text" name="cidrs" value=(p.allowed_ips.to_strings().join(", "));
                        label for="allow-reason" { "Reason (optional)" }
                        input id="allow-reason" type="text" name="reason";
                        button type="submit" { "Set the allow-list" }
                    }
                    @if p.status.as_str() == "pending" {
                        form method="post" action=(action("resend-link")) {
                            h3 { "Onboarding link" }
                            (csrf(signed))
                            input type="hidden" name="reason" value="";
                            button type="submit" { "Email a fresh onboarding link" }
                        }
                        form method="post" action=(action("release")) {
                            h3 { "Release the code" }
                            p class="muted" { "Deletes this pending partner; the code is free again." }
                            (csrf(signed))
                            label for="release-reason" { "Reason (required)" }
                            input id="release-reason" type="text" name="reason" required;
                            button class="danger" type="submit" { "Release the code" }
                        }
                    }
                }
            }
        },
    )
}

pub fn audit(
    signed: &Signed,
    partner: &str,
    event: &str,
    events: &[AuditRecord],
    flash_: Markup,
) -> Markup {
    page(
        "Audit",
        signed,
        html! {
            (flash_)
            form method="get" action="/console/audit" class="search" {
                label for="partner" { "Partner code" }
                input id="partner" type="search" name="partner" value=(partner);
                label for="event" { "Event" }
                input id="event" type="search" name="event" value=(event) placeholder="partner_suspended";
                button type="submit" { "Search" }
            }
            @if events.is_empty() { p class="muted" { "No event matches." } } @else {
                div class="scroll" { table id="audit" {
                    thead { tr { th { "Time" } th { "Event" } th { "Partner" } th { "Actor" } th { "IP" } th { "Detail" } } }
                    tbody { @for e in events { tr {
                        td { (time(Some(e.created_at))) } td { (e.event) }
                        td { @if let Some(code) = &e.partner_code { a href={ "/console/partners/" (code) } { (code) } } @else { "—" } }
                        td { (e.actor.as_deref().unwrap_or("—")) } td { (e.ip.as_deref().unwrap_or("—")) } td { (e.detail.as_deref().unwrap_or("")) }
                    } } }
                } }
                p class="muted" { "The latest " (events.len()) " events, newest first." }
            }
        },
    )
}

pub fn outbox(
    signed: &Signed,
    backlog: &OutboxBacklog,
    dead: &[DeadEmail],
    flash_: Markup,
) -> Markup {
    page(
        "Outbox",
        signed,
        html! {
            (flash_)
            dl class="facts" {
                dt { "Due now" } dd { (backlog.due) }
                dt { "Scheduled" } dd { (backlog.scheduled) }
                dt { "Dead letters" } dd { (backlog.dead) }
                dt { "Oldest due" } dd { (backlog.oldest_due_age_ms / 1000) " s" }
            }
            h2 { "Dead letters" }
            @if dead.is_empty() { p class="muted" { "None." } } @else {
                div class="scroll" { table {
                    thead { tr { th { "Recipient" } th { "Kind" } th { "Attempts" } th { "Last error" } } }
                    tbody { @for d in dead { tr { td { (d.recipient) } td { (d.kind) } td { (d.attempts) } td { (d.last_error.as_deref().unwrap_or("")) } } } }
                } }
                @if signed.role >= Role::Operator {
                    form method="post" action="/console/outbox/retry" {
                        (csrf(signed))
                        button type="submit" { "Retry every dead letter" }
                    }
                }
            }
        },
    )
}

pub fn service_tokens(
    signed: &Signed,
    tokens: &[ServiceTokenRecord],
    created: Option<(&str, &str)>,
    flash_: Markup,
) -> Markup {
    page(
        "Service tokens",
        signed,
        html! {
            (flash_)
            @if let Some((name, token)) = created {
                div class="warning" {
                    p { "The token of " strong { (name) } " — shown once, copy it now:" }
                    input id="new-token" type="text" readonly value=(token);
                }
            }
            @if tokens.is_empty() { p class="muted" { "None." } } @else {
                table {
                    thead { tr { th { "Name" } th { "Hint" } th { "Created" } th { "Last used" } th { "Revoked" } @if signed.role == Role::Admin { th {} } } }
                    tbody { @for t in tokens { tr {
                        td { (t.name) } td { code { (t.hint) } } td { (time(Some(t.created_at))) } td { (time(t.last_used_at)) } td { (time(t.revoked_at)) }
                        @if signed.role == Role::Admin { td { @if t.revoked_at.is_none() {
                            form method="post" action="/console/service-tokens/revoke" class="inline" {
                                (csrf(signed))
                                input type="hidden" name="name" value=(t.name);
                                input type="text" name="reason" placeholder="reason (required)" required aria-label="reason";
                                button class="danger" type="submit" { "Revoke" }
                            }
                        } } }
                    } } }
                }
            }
            @if signed.role == Role::Admin {
                h2 { "New token" }
                form method="post" action="/console/service-tokens" {
                    (csrf(signed))
                    label for="token-name" { "Name of the calling service" }
                    input id="token-name" type="text" name="name" required;
                    button type="submit" { "Create" }
                }
            }
        },
    )
}

pub fn webhooks(
    signed: &Signed,
    endpoints: &[(WebhookEndpoint, i64)],
    added: Option<(&str, &str)>,
    flash_: Markup,
) -> Markup {
    page(
        "Webhooks",
        signed,
        html! {
            (flash_)
            @if let Some((url, secret)) = added {
                div class="warning" {
                    p { "The signing secret of " code { (url) } " — shown once, copy it now:" }
                    input id="new-secret" type="text" readonly value=(secret);
                }
            }
            @if endpoints.is_empty() { p class="muted" { "None." } } @else {
                table {
                    thead { tr { th { "URL" } th { "Events" } th { "Waiting" } th { "Disabled" } @if signed.role == Role::Admin { th {} } } }
                    tbody { @for (e, waiting) in endpoints { tr {
                        td { code { (e.url) } } td { (e.events.as_deref().unwrap_or("every event")) } td { (waiting) }
                        td { (e.disabled_reason.as_deref().unwrap_or("—")) }
                        @if signed.role == Role::Admin { td {
                            form method="post" action="/console/webhooks/remove" class="inline" {
                                (csrf(signed))
                                input type="hidden" name="id" value=(e.id);
                                input type="text" name="reason" placeholder="reason (required)" required aria-label="reason";
                                button class="danger" type="submit" { "Remove" }
                            }
                        } }
                    } } }
                }
            }
            @if signed.role == Role::Admin {
                h2 { "New endpoint" }
                form method="post" action="/console/webhooks" {
                    (csrf(signed))
                    label for="hook-url" { "URL" }
                    input id="hook-url" type="text" name="url" required placeholder="https://risk.internal/hooks";
                    label for="hook-events" { "Events (comma-separated; empty: every event)" }
                    input id="hook-events" type="text" name="events";
                    button type="submit" { "Add" }
                }
            }
        },
    )
}

/// The callback's answer: the session cookie is `SameSite=Strict`, so it is not sent on the
/// redirect chain that began at the identity provider; this page, same-site, continues.
pub fn continue_page() -> Markup {
    bare_with(
        "Signed in",
        Some("/console/partners"),
        html! {
            p { "You are signed in." }
            p { a id="continue" class="button" href="/console/partners" { "Continue to the console" } }
        },
    )
}

pub fn refused(title: &str, why: &str) -> Markup {
    bare(
        title,
        html! {
            p { (why) }
            p { a href="/console/login" { "Sign in again" } }
        },
    )
}
