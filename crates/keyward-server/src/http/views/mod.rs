//! The link pages, rendered on the server (maud). They work without JavaScript; the only
//! script is the copy buttons. No script submits a form: a person types the partner code and
//! presses the button, so mail scanners that fetch links consume nothing.

use crate::flows::Overlap;
use chrono::{DateTime, Utc};
use keyward_core::wire::{paths, Credentials};
use keyward_core::ErrorCode;
use maud::{html, Markup, DOCTYPE};

pub const STYLESHEET: &str = include_str!("keyward.css");
pub const COPY_SCRIPT: &str = include_str!("copy.js");

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex, nofollow";
                title { (title) " · keyward" }
                link rel="stylesheet" href=(paths::STYLESHEET);
            }
            body {
                main class="card" {
                    p class="brand" { "keyward" }
                    (body)
                }
            }
        }
    }
}

/// What a link does, in words.
pub struct LinkPage<'a> {
    pub regeneration: bool,
    pub expires_at: DateTime<Utc>,
    /// How long the current keys keep working after a regeneration.
    pub overlap: Overlap,
    pub now: DateTime<Utc>,
    /// Set when a typed partner code did not match (the page is re-rendered with 422).
    pub error: Option<&'a str>,
    pub typed_code: &'a str,
    /// For a `restricted_key` link: the pair it makes.
    pub key: Option<&'a crate::store::KeySpec>,
}

pub fn link_page(page: &LinkPage<'_>) -> Markup {
    let (title, what, button) = if page.key.is_some() {
        (
            "Get your new API key",
            "This one-time link creates a new restricted key pair for your partner account. Your other keys keep working.",
            "Show my new key",
        )
    } else if page.regeneration {
        (
            "Regenerate your API keys",
            "This one-time link creates a new key pair for your partner account; your partner ID stays the same.",
            "Regenerate my keys",
        )
    } else {
        (
            "Get your API keys",
            "This one-time link activates your partner account and shows your public key, secret key and partner ID.",
            "Show my keys",
        )
    };
    let until = page.now + chrono::TimeDelta::seconds(page.overlap.seconds());
    let expires = page.expires_at.format("%Y-%m-%d %H:%M UTC").to_string();
    layout(
        title,
        html! {
            h1 { (title) }
            p { (what) }
            @if let Some(key) = page.key {
                dl class="facts" id="key-facts" {
                    dt { "Name" } dd { (key.name) }
                    dt { "Scopes" } dd { (crate::flows::describe_scopes(&key.scopes)) }
                    dt { "Mode" } dd {
                        (key.mode.as_str())
                        @if key.mode == keyward_core::KeyMode::Test { " (never reaches the live service)" }
                    }
                    dt { "Expires" } dd { (crate::flows::describe_validity(key.valid_days)) }
                }
            }
            @if page.regeneration {
                @if page.overlap.seconds() == 0 {
                    p class="notice" id="old-keys" { strong { "Your current keys stop working when you press the button." } " Have the new ones ready to install." }
                } @else {
                    p class="notice" id="old-keys" {
                        strong { "Your current keys keep working for " (page.overlap.describe()) " after you press the button" }
                        " (until " time datetime=(until.to_rfc3339()) { (human(until)) } " if you press it now), so you can switch without an outage. Then they stop."
                    }
                }
            }
            p class="muted" { "The link works once and expires at " time datetime=(page.expires_at.to_rfc3339()) { (expires) } "." }
            @if let Some(error) = page.error {
                p class="error" role="alert" id="code-error" { (error) }
            }
            form method="post" autocomplete="off" {
                label for="partner_code" { "Your partner code" }
                input id="partner_code" name="partner_code" type="text" required maxlength="64"
                    autocapitalize="none" spellcheck="false" value=(page.typed_code)
                    aria-describedby=[page.error.map(|_| "code-error")] aria-invalid=[page.error.map(|_| "true")];
                p class="hint" { "Type the partner code this email was sent for. Have a safe place ready for the secret key: it is shown once." }
                button type="submit" { (button) }
            }
        },
    )
}

/// The keys, shown once.
pub fn reveal_page(
    credentials: &Credentials,
    regeneration: bool,
    old_keys_expire_at: Option<DateTime<Utc>>,
) -> Markup {
    let title = if credentials.key.is_some() {
        "Your new API key"
    } else if regeneration {
        "Your new API keys"
    } else {
        "Your API keys"
    };
    let field = |id: &str, label: &str, value: &str, secret: bool| {
        html! {
            div class="field" {
                label for=(id) { (label) }
                div class="copyrow" {
                    // A textarea wraps, so that the whole key is visible even on a phone.
                    textarea id=(id) readonly rows="1" spellcheck="false" autocapitalize="none" class=[secret.then_some("secret")] { (value) }
                    button type="button" class="copy" data-copy=(id) aria-label=(format!("Copy the {}", label.to_lowercase())) { "Copy" }
                }
            }
        }
    };
    layout(
        title,
        html! {
            h1 { (title) }
            @if regeneration {
                @if let Some(until) = old_keys_expire_at {
                    p class="notice" id="old-keys" { "Your previous keys keep working until " strong { time datetime=(until.to_rfc3339()) { (human(until)) } } ", then stop. Switch to these before then. Your partner ID is unchanged." }
                } @else {
                    p { "Your previous keys no longer work. Your partner ID is unchanged." }
                }
            }
            @if let Some(key) = &credentials.key {
                dl class="facts" id="key-facts" {
                    dt { "Name" } dd { (key.name.as_deref().unwrap_or("")) }
                    dt { "Scopes" } dd { @if key.scopes.is_empty() { "none" } @else { (key.scopes.join(", ")) } }
                    dt { "Mode" } dd { (key.mode) }
                    dt { "Expires" } dd { (key.expires_at.as_deref().unwrap_or("never")) }
                    dt { "Key id" } dd { code { (key.key_id) } }
                }
                p { "Your other keys keep working." }
            }
            div class="warning" role="alert" {
                strong { "Copy your secret key now. " }
                "It is not shown again: keyward stores it encrypted and cannot display it later. If you lose it, request new keys."
            }
            (field("partner_id", "Partner ID", &credentials.partner_id, false))
            (field("public_key", "Public key", &credentials.public_key, false))
            (field("secret_key", "Secret key", &credentials.secret_key, true))
            p class="muted" { "Sign each request with HMAC-SHA512 of its JSON body, keyed with the secret key, and send the public key as " code { "Authorization: Bearer pk_partner_…" } "." }
            script src=(paths::COPY_SCRIPT) {}
        },
    )
}

fn human(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub fn error_page(code: ErrorCode, request_id: &str) -> Markup {
    let (title, advice) = match code {
        ErrorCode::LinkUsed => ("This link was already used", "Each link works once. If you did not use it yourself, request new keys now and tell the exchange's operators."),
        ErrorCode::LinkExpired => ("This link has expired", "It is too old, or a newer email replaced it. Use the newest email, or request a new link."),
        ErrorCode::LinkUnknown => ("This link is not known", "Check that you opened the whole link from the email; some mail programs break long links."),
        ErrorCode::RateLimited => ("Too many attempts", "Wait a minute, then try again."),
        ErrorCode::PartnerSuspended => ("This partner is suspended", "Contact the exchange's operators."),
        _ => ("Something went wrong", "Try again in a moment. If it keeps happening, contact the operators and quote the request id below."),
    };
    layout(
        title,
        html! {
            h1 { (title) }
            p { (advice) }
            p class="muted" { "Error " code { (code.as_str()) } " · request id " code { (request_id) } }
        },
    )
}
