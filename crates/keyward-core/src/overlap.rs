//! How long an old key pair keeps working after a regeneration (SPEC §3.2): the overlap.
//! One rule for the server, the SDK and the CLI: 0 to 7 days.

/// How long the old pair keeps working after a regeneration (SPEC §3.2): 0 to 7 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overlap(i64);

impl Overlap {
    /// The longest overlap: 7 days.
    pub const MAX_SECONDS: i64 = 604_800;
    /// The reminder goes out this long before a retiring pair expires...
    pub const REMINDER_BEFORE_SECONDS: i64 = 86_400;
    /// ...when the overlap is at least this long.
    pub const REMINDER_FROM_SECONDS: i64 = 2 * 86_400;

    pub fn from_seconds(seconds: i64) -> Option<Self> {
        (0..=Self::MAX_SECONDS)
            .contains(&seconds)
            .then_some(Self(seconds))
    }

    pub fn seconds(self) -> i64 {
        self.0
    }

    /// "1 day 2 hours", for emails and pages; empty for none.
    pub fn describe(self) -> String {
        describe_duration(self.0)
    }
}

/// Seconds in words, largest units first, at most two of them ("2 days 3 hours").
pub fn describe_duration(seconds: i64) -> String {
    let units = [
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut left = seconds.max(0);
    let mut parts = Vec::new();
    for (size, name) in units {
        let n = left / size;
        if n > 0 && parts.len() < 2 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
            left -= n * size;
        }
    }
    parts.join(" ")
}
