//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, generated from the handlers'
//! `#[utoipa::path]` annotations and the schemas in `schemas.rs` (the wire types of core carry
//! their own, behind its `openapi` feature). Schemathesis checks in CI that every answer the
//! server gives matches it.

use super::public_router::PublicRouter;
use axum::routing::get;
use axum::Json;
use keyward_core::wire::{paths, FieldProblem};
use keyward_core::ErrorCode;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::schemas::ErrorEnvelope;

pub fn router() -> PublicRouter {
    PublicRouter::new().route(paths::OPENAPI, get(|| async { Json(document()) }))
}

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyward",
        description = "Partner credentials for a payment API: onboarding through one-time emailed links, HMAC-SHA512 signed requests, key regeneration. Compatible with Fuspay's partner API.",
        license(name = "Apache-2.0")
    ),
    paths(
        super::onboarding::onboard,
        super::keys::regenerate,
        super::keys::whoami,
        super::keys::retire_old_keys,
        super::keys::set_allowed_ips,
        super::keys::create_key,
        super::keys::list_keys,
        super::keys::revoke_key,
        super::ops::time,
        super::secret_scanning::report,
        super::links::show,
        super::links::redeem_form,
        super::links::redeem_json,
        super::ops::healthz,
        super::ops::readyz,
    ),
    components(schemas(ErrorEnvelope, FieldProblem, ErrorCode)),
    modifiers(&Aliases, &BearerKey),
    tags(
        (name = "partners", description = "Onboarding and regeneration (emails a one-time link)"),
        (name = "signed", description = "Requests signed with the partner's keys"),
        (name = "keys", description = "Restricted and test key pairs, managed with the primary pair (SPEC §8)"),
        (name = "links", description = "One-time links"),
        (name = "secret scanning", description = "Leaked tokens reported by GitHub (KEYWARD_GITHUB_SECRET_SCANNING=on)"),
        (name = "operations", description = "Health (metrics are on the internal listener)")
    )
)]
struct ApiDoc;

/// The aliases of the regeneration route share its description (operation ids stay unique).
struct Aliases;

impl Modify for Aliases {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(item) = openapi.paths.paths.get(paths::REGENERATE).cloned() else {
            return;
        };
        for (i, alias) in paths::REGENERATE_ALL.iter().enumerate().skip(1) {
            let mut alias_item = item.clone();
            if let Some(post) = alias_item.post.as_mut() {
                post.operation_id = Some(format!("regenerate_alias_{i}"));
                post.summary = Some(format!("Alias of {}", paths::REGENERATE));
            }
            openapi.paths.paths.insert((*alias).to_owned(), alias_item);
        }
    }
}

/// `Authorization: Bearer pk_partner_…` on the signed routes.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        add_bearer_scheme(
            openapi,
            "partner_key",
            "pk_partner_ + 30 base62 + 6-char checksum",
            "The partner's public key. The body also carries `signature`: lower-case hex HMAC-SHA512 of the body without it, keyed with the secret key.",
        );
    }
}

/// Declares an `Authorization: Bearer …` security scheme called `name`.
pub(super) fn add_bearer_scheme(
    openapi: &mut utoipa::openapi::OpenApi,
    name: &str,
    format: &str,
    description: &str,
) {
    let scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format(format)
        .description(Some(description))
        .build();
    if let Some(components) = openapi.components.as_mut() {
        components.add_security_scheme(name, SecurityScheme::Http(scheme));
    }
}
