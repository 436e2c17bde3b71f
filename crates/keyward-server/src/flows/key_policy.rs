//! What a key may do and until when (SPEC §8): the exchange's scopes, the expiry policy, and
//! the arithmetic both need. Pure: the hot path calls it on what the key cache holds, with no
//! database read.

use crate::error::{Error, Result};
use crate::store::KeyClass;
use keyward_core::scopes::Scopes;
use keyward_core::wire::ScopeData;
use keyward_core::ErrorCode;

/// The scopes this exchange knows (`KEYWARD_SCOPES`); `None`: scopes are off and every key
/// has all power.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSettings {
    pub known: Option<Scopes>,
    /// `KEYWARD_UPSTREAM_SCOPES`: path prefix → the scope it needs, longest prefix first.
    pub upstream: Vec<(String, String)>,
}

impl ScopeSettings {
    pub fn is_on(&self) -> bool {
        self.known.is_some()
    }

    /// The scope a gateway path needs: the longest matching prefix's, if any. Paths and
    /// prefixes are compared in [`scope_path`] form, so no spelling of a path that an
    /// upstream may read as the same route (`%50ayout`, `payout`, `//Payout`, `;x`) escapes
    /// the scope of its prefix.
    pub fn required_for_path(&self, path: &str) -> Option<&str> {
        if self.upstream.is_empty() {
            return None;
        }
        let path = scope_path(path);
        // Sorted longest first when the settings load, so the first match is the longest.
        self.upstream
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, scope)| scope.as_str())
    }

    /// What a pair of this class holds: the primary pair every known scope, a restricted pair
    /// its own.
    pub fn granted(&self, class: &KeyClass) -> Vec<String> {
        match (class, &self.known) {
            (KeyClass::Primary, Some(known)) => known.to_vec(),
            (KeyClass::Primary, None) => Vec::new(),
            (KeyClass::Restricted { scopes, .. }, _) => scopes.to_vec(),
        }
    }

    /// 403 `insufficient_scope` unless a pair of this class holds every scope of `required`.
    /// With scopes off every pair holds everything.
    pub fn require<'a>(
        &self,
        class: &KeyClass,
        required: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<()> {
        let holds = match (class, &self.known) {
            (_, None) | (KeyClass::Primary, Some(_)) => true,
            (KeyClass::Restricted { scopes, .. }, Some(_)) => scopes.covers(required.clone()),
        };
        if holds {
            return Ok(());
        }
        Err(Error::InsufficientScope(ScopeData {
            required: required.into_iter().map(str::to_owned).collect(),
            granted: self.granted(class),
        }))
    }
}

/// A path as scopes compare it: every segment percent-decoded until it no longer changes, cut
/// at `;` (servlet parameters), in lower case; empty segments dropped. Upstreams differ in
/// which of these they ignore; comparing after all of them errs on the side of the scope.
pub fn scope_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let mut segment = raw.as_bytes().to_vec();
        for _ in 0..4 {
            let decoded: Vec<u8> = percent_encoding::percent_decode(&segment).collect();
            if decoded == segment {
                break;
            }
            segment = decoded;
        }
        let name = segment.split(|&b| b == b';').next().unwrap_or_default();
        out.push('/');
        out.push_str(&String::from_utf8_lossy(name).to_lowercase());
    }
    if path.ends_with('/') || out.is_empty() {
        out.push('/');
    }
    out
}

/// Only the primary pair manages the partner's keys and account (SPEC §8.1).
pub fn require_primary(class: &KeyClass) -> Result<()> {
    match class {
        KeyClass::Primary => Ok(()),
        KeyClass::Restricted { .. } => Err(Error::Code(
            ErrorCode::InsufficientScope,
            Some("This is a restricted key: only your primary key pair manages your keys and account (GenKeysForPartner, CreateKey, ListKeys, RevokeKey, RetireOldKeys, SetAllowedIps). Sign this request with the primary pair.".to_owned()),
        )),
    }
}

/// The expiry policy (SPEC §8.4), in milliseconds; every part optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryPolicy {
    pub max_age: Option<i64>,
    pub max_age_without_allowlist: Option<i64>,
    pub max_idle: Option<i64>,
    /// How long before an expiry the partner is reminded, longest first.
    pub reminders: Vec<i64>,
    /// `KEYWARD_LEGACY_KEYS_UNTIL`: when keys moved in with another format stop working
    /// (SPEC §10.2), ms.
    pub legacy_keys_until: Option<i64>,
}

impl Default for ExpiryPolicy {
    fn default() -> Self {
        Self {
            max_age: None,
            max_age_without_allowlist: None,
            max_idle: None,
            reminders: vec![14 * DAY_MS, 3 * DAY_MS, DAY_MS],
            legacy_keys_until: None,
        }
    }
}

const DAY_MS: i64 = 86_400_000;

/// `30d`, `12h`, `90s`: the settings' own spelling.
fn short_duration(ms: i64) -> String {
    let secs = ms / 1000;
    for (unit, per) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs % per == 0 {
            return format!("{}{unit}", secs / per);
        }
    }
    format!("{secs}s")
}

/// A pair's times as the policy reads them (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTimes {
    pub created_at: i64,
    /// The latest use known (approximate).
    pub last_used_at: Option<i64>,
    /// A retiring primary pair's end of overlap.
    pub retiring_until: Option<i64>,
    /// A restricted pair's own expiry.
    pub valid_until: Option<i64>,
    /// Moved in with keys not of §1's format (SPEC §10.2).
    pub legacy: bool,
}

impl ExpiryPolicy {
    /// For the start-up line and `keyward check-config`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            ("max age", self.max_age),
            (
                "max age without an allow-list",
                self.max_age_without_allowlist,
            ),
            ("max idle", self.max_idle),
        ]
        .into_iter()
        .filter_map(|(what, ms)| ms.map(|ms| format!("{what} {}", short_duration(ms))))
        .chain(self.legacy_keys_until.map(|ms| {
            let until = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
            format!(
                "legacy keys until {}",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        }))
        .collect();
        if parts.is_empty() {
            return "off (keys live until revoked)".to_owned();
        }
        let reminders: Vec<String> = self
            .reminders
            .iter()
            .map(|&ms| short_duration(ms))
            .collect();
        format!(
            "{}; reminders {} before",
            parts.join(", "),
            reminders.join(", ")
        )
    }

    /// When the pair lapses under the policy or its own expiry, not counting an overlap.
    pub fn lapses_at(&self, key: &KeyTimes, has_allow_list: bool) -> Option<i64> {
        let idle_from = key
            .last_used_at
            .map_or(key.created_at, |used| used.max(key.created_at));
        let without_allowlist = if has_allow_list {
            None
        } else {
            self.max_age_without_allowlist
        };
        [
            self.max_age.map(|age| key.created_at.saturating_add(age)),
            without_allowlist.map(|age| key.created_at.saturating_add(age)),
            self.max_idle.map(|idle| idle_from.saturating_add(idle)),
            key.valid_until,
            self.legacy_keys_until.filter(|_| key.legacy),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the pair stops working: the earliest of its overlap, the policy and its own expiry.
    pub fn expires_at(&self, key: &KeyTimes, has_allow_list: bool) -> Option<i64> {
        [self.lapses_at(key, has_allow_list), key.retiring_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// The reminders to store for a pair at `now`: `(before_secs, due_at)` for each reminder
    /// still ahead. A retiring pair gets none (its own reminder covers its overlap).
    pub fn reminders_due(&self, key: &KeyTimes, has_allow_list: bool, now: i64) -> Vec<(i64, i64)> {
        if key.retiring_until.is_some() {
            return Vec::new();
        }
        let Some(at) = self.lapses_at(key, has_allow_list) else {
            return Vec::new();
        };
        self.reminders
            .iter()
            .map(|&before| (before / 1000, at - before))
            .filter(|&(_, due)| due > now)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn times(created_at: i64) -> KeyTimes {
        KeyTimes {
            created_at,
            last_used_at: None,
            retiring_until: None,
            valid_until: None,
            legacy: false,
        }
    }

    #[test]
    fn the_earliest_expiry_applies() {
        let policy = ExpiryPolicy {
            max_age: Some(100 * H),
            max_age_without_allowlist: Some(10 * H),
            max_idle: Some(20 * H),
            reminders: vec![2 * H, H],
            legacy_keys_until: Some(4 * H),
        };
        let key = times(0);
        // The end date for legacy keys applies to legacy keys alone, and is reminded of.
        let legacy = KeyTimes {
            legacy: true,
            ..key
        };
        assert_eq!(policy.expires_at(&legacy, true), Some(4 * H));
        assert_eq!(
            policy.reminders_due(&legacy, true, 0),
            vec![(7200, 2 * H), (3600, 3 * H)]
        );
        assert_eq!(policy.expires_at(&key, false), Some(10 * H));
        // An allow-list lifts the shorter age; idle counts from creation when never used.
        assert_eq!(policy.expires_at(&key, true), Some(20 * H));
        let used = KeyTimes {
            last_used_at: Some(90 * H),
            ..key
        };
        assert_eq!(policy.expires_at(&used, true), Some(100 * H));
        let own = KeyTimes {
            valid_until: Some(5 * H),
            ..key
        };
        assert_eq!(policy.expires_at(&own, true), Some(5 * H));
        let retiring = KeyTimes {
            retiring_until: Some(3 * H),
            ..key
        };
        assert_eq!(policy.expires_at(&retiring, true), Some(3 * H));
        assert!(policy.reminders_due(&retiring, true, 0).is_empty());
        assert_eq!(ExpiryPolicy::default().expires_at(&key, false), None);
    }

    #[test]
    fn reminders_already_past_are_not_stored() {
        let policy = ExpiryPolicy {
            max_age: Some(10 * H),
            reminders: vec![14 * DAY_MS, 2 * H, H],
            ..ExpiryPolicy::default()
        };
        assert_eq!(
            policy.reminders_due(&times(0), false, 0),
            vec![(7200, 8 * H), (3600, 9 * H)]
        );
        assert_eq!(
            policy.reminders_due(&times(0), false, 8 * H),
            vec![(3600, 9 * H)]
        );
    }

    #[test]
    fn scopes_are_required_of_restricted_pairs_only() {
        let settings = ScopeSettings {
            known: Some(Scopes::from_names(["a", "b"])),
            upstream: vec![("/x/long".into(), "b".into()), ("/x".into(), "a".into())],
        };
        let restricted = KeyClass::Restricted {
            name: "r".into(),
            scopes: Scopes::from_names(["a"]),
            valid_until: None,
        };
        assert!(settings.require(&KeyClass::Primary, ["b"]).is_ok());
        assert!(settings.require(&restricted, ["a"]).is_ok());
        let Err(Error::InsufficientScope(data)) = settings.require(&restricted, ["b"]) else {
            panic!("a restricted key without the scope passed");
        };
        assert_eq!(
            (data.required, data.granted),
            (vec!["b".into()], vec!["a".into()])
        );
        assert_eq!(settings.required_for_path("/x/long/y"), Some("b"));
        assert_eq!(settings.required_for_path("/x/y"), Some("a"));
        assert_eq!(settings.required_for_path("/z"), None);
        for spelling in [
            "/X/%6cong/y",
            "/x//long/y",
            "/x/LONG/y",
            "/x/long;a=b/y",
            "/x/%256cong/y",
        ] {
            assert_eq!(
                settings.required_for_path(spelling),
                Some("b"),
                "{spelling}"
            );
        }
        assert!(ScopeSettings::default().require(&restricted, ["b"]).is_ok());
    }
}
