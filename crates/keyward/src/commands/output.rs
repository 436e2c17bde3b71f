//! How the operator commands name their operator and write times and lists.

use keyward_core::AllowedIps;
use serde_json::json;

/// Who runs an operator command: `--operator`, else `$USER`, else "unknown" (the audit log
/// then says `operator:unknown`, not a made-up name).
pub fn operator_name(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("USER").ok())
        .map(|name| {
            name.trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

pub fn time_text(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

pub fn rfc3339(ms: Option<i64>) -> serde_json::Value {
    ms.map_or(serde_json::Value::Null, |t| {
        json!(keyward_core::wire::wire_time(t))
    })
}

/// "3d", "5h", "12m" or "now": how long ago, for tables.
pub fn age(ms: Option<i64>, now: i64) -> String {
    let Some(ms) = ms else {
        return "-".to_owned();
    };
    let minutes = (now - ms).max(0) / 60_000;
    match minutes {
        0 => "now".to_owned(),
        m if m < 60 => format!("{m}m"),
        m if m < 48 * 60 => format!("{}h", m / 60),
        m => format!("{}d", m / (24 * 60)),
    }
}

pub fn allow_list_text(list: &AllowedIps) -> String {
    if list.is_empty() {
        "any address".to_owned()
    } else {
        list.to_strings().join(", ")
    }
}

/// An RFC 3339 time, or a duration ago (`7d`, `12h`, `90m`): milliseconds since the epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(time.timestamp_millis());
    }
    let ago = humantime::parse_duration(text.trim()).map_err(|_| {
        format!("{text:?} is neither an RFC 3339 time (2026-11-27T10:00:00Z) nor a duration ago (7d, 12h)")
    })?;
    let ago = i64::try_from(ago.as_millis()).map_err(|_| "too long ago".to_owned())?;
    Ok(chrono::Utc::now().timestamp_millis() - ago)
}
