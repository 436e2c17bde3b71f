//! Which request paths the gateway may forward (SPEC §7.2).
//!
//! The gateway checks the path it received against the upstream prefixes and sends that very
//! path. Servers and HTTP clients between keyward and the payment API resolve dot-segments
//! (`..`, `%2e%2E`, `..;`), turn `\` into `/` and decode `%2f`, so a path that starts with an
//! allowed prefix can land anywhere once one of them has normalised it. Such paths are
//! therefore never forwarded: a path passes only if nothing along the way can move it.
//!
//! The rule is applied to each segment of the raw path, and to every percent-decoding of it
//! (an upstream that decodes twice must not find a dot-segment either).

use percent_encoding::percent_decode;

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    /// `.` or `..` as a segment, raw or percent-encoded in any case, or with `;parameters`.
    DotSegment,
    /// `\`, raw or percent-encoded: several servers and URL parsers read it as `/`.
    Backslash,
    /// `%2f` (any case, at any depth of encoding): a `/` the prefix check did not see.
    EncodedSlash,
    /// Percent-encoded more deeply than anything legitimate (`%25252e…`).
    DeepEncoding,
}

impl PathRefusal {
    /// What the partner is told (400 `invalid_field`, field `path`).
    pub fn problem(self) -> &'static str {
        match self {
            Self::DotSegment => "must not hold a dot-segment (`.` or `..`, raw or percent-encoded)",
            Self::Backslash => "must not hold a backslash, raw or percent-encoded",
            Self::EncodedSlash => "must not hold an encoded slash (%2F)",
            Self::DeepEncoding => "must not be percent-encoded more than a few times over",
        }
    }
}

/// How many layers of percent-encoding are looked through. Each layer needs `%25`, so a
/// deeper one cannot be short, and it is refused as it stands (see [`check`]).
const DECODING_ROUNDS: usize = 4;

/// `Ok` when `path` (the path of the request target, as received, without the query) can be
/// forwarded as it is: no segment is or decodes to a dot-segment, and no `\` or encoded `/`
/// appears at any depth of encoding.
pub fn check(path: &str) -> Result<(), PathRefusal> {
    path.split('/').try_for_each(check_segment)
}

fn check_segment(raw: &str) -> Result<(), PathRefusal> {
    // Nothing to decode: the segment is all there is to check (and no copy is made).
    if !raw.contains('%') {
        return check_decoded(raw.as_bytes());
    }
    let mut segment = raw.as_bytes().to_vec();
    for _ in 0..DECODING_ROUNDS {
        check_decoded(&segment)?;
        let decoded: Vec<u8> = percent_decode(&segment).collect();
        if decoded == segment {
            return Ok(());
        }
        segment = decoded;
    }
    // Still percent-encoded after so many rounds: nothing legitimate looks like that.
    check_decoded(&segment)?;
    if percent_decode(&segment).eq(segment.iter().copied()) {
        Ok(())
    } else {
        Err(PathRefusal::DeepEncoding)
    }
}

/// One decoding of one segment: after decoding, a `/` can only come from `%2f`.
fn check_decoded(segment: &[u8]) -> Result<(), PathRefusal> {
    if segment.contains(&b'\\') {
        return Err(PathRefusal::Backslash);
    }
    if segment.contains(&b'/') {
        return Err(PathRefusal::EncodedSlash);
    }
    // Servlet containers drop `;parameters` before resolving `..`.
    let name = segment.split(|&b| b == b';').next().unwrap_or_default();
    if name == b"." || name == b".." {
        return Err(PathRefusal::DotSegment);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_reviewers_paths_are_refused() {
        for (path, why) in [
            (
                "/api/v1/PartnerP2P/Payout/%2e%2e/Refund",
                PathRefusal::DotSegment,
            ),
            (
                "/api/v1/PartnerP2P/Payout/../../../admin",
                PathRefusal::DotSegment,
            ),
            (
                "/api/v1/PartnerP2P/Payout/\\..\\..\\admin",
                PathRefusal::Backslash,
            ),
            (
                "/api/v1/PartnerP2P/Payout/%2E%2e/x",
                PathRefusal::DotSegment,
            ),
            ("/api/v1/PartnerP2P/Payout/.%2E/x", PathRefusal::DotSegment),
            ("/api/v1/PartnerP2P/Payout/./x", PathRefusal::DotSegment),
            ("/api/v1/PartnerP2P/Payout/..;/x", PathRefusal::DotSegment),
            (
                "/api/v1/PartnerP2P/Payout/%252e%252e/x",
                PathRefusal::DotSegment,
            ),
            ("/api/v1/PartnerP2P/Payout/a%2fb", PathRefusal::EncodedSlash),
            ("/api/v1/PartnerP2P/Payout/a%2Fb", PathRefusal::EncodedSlash),
            (
                "/api/v1/PartnerP2P/Payout/a%252Fb",
                PathRefusal::EncodedSlash,
            ),
            ("/api/v1/PartnerP2P/Payout/a%5cb", PathRefusal::Backslash),
            ("/api/v1/PartnerP2P/Payout/a%5Cb", PathRefusal::Backslash),
            ("/api/v1/PartnerP2P/Payout/..", PathRefusal::DotSegment),
        ] {
            assert_eq!(check(path), Err(why), "{path}");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for path in [
            "/api/v1/PartnerP2P/Payout",
            "/api/v1/PartnerP2P/Payout/",
            "/api/v1/PartnerP2P/Payout/a.b/..c/...",
            "/api/v1/PartnerP2P/Payout/%20x",
            "/api/v1/PartnerP2P/Payout//double",
            "/api/v1/PartnerP2P/Payout/caf%C3%A9",
        ] {
            assert_eq!(check(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn encodings_deeper_than_we_look_are_refused() {
        let mut dot = "%2e".to_owned();
        for _ in 0..6 {
            dot = dot.replace('%', "%25");
        }
        assert!(check(&format!("/p/{dot}{dot}/x")).is_err());
    }

    /// Resolves a path as RFC 3986 §5.2.4 and the WHATWG URL parser do, after reading `\` as
    /// `/` and decoding each segment once: what an upstream that normalises would see.
    fn normalised(path: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for segment in path.replace('\\', "/").split('/').skip(1) {
            let decoded = percent_decode(segment.as_bytes())
                .decode_utf8_lossy()
                .to_string();
            match decoded.to_ascii_lowercase().as_str() {
                "." => {}
                ".." => {
                    out.pop();
                }
                _ => out.extend(decoded.split('/').map(str::to_owned)),
            }
        }
        out
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("%2e".to_owned()),
            Just("%2E%2e".to_owned()),
            Just(".%2e".to_owned()),
            Just("..;x".to_owned()),
            Just("%2f".to_owned()),
            Just("%5C".to_owned()),
            Just("\\".to_owned()),
            Just("%25".to_owned()),
            Just("".to_owned()),
            "[A-Za-z0-9._~%-]{1,6}",
        ]
    }

    proptest! {
        /// Whatever a path holds, if it passes, an upstream that normalises it still sees it
        /// under the prefix it started with.
        #[test]
        fn a_path_that_passes_stays_under_its_prefix(rest in prop::collection::vec(segment(), 0..8)) {
            let prefix = ["api", "v1", "PartnerP2P", "Payout"];
            let path = format!("/{}/{}", prefix.join("/"), rest.join("/"));
            if check(&path).is_ok() {
                let seen = normalised(&path);
                prop_assert!(seen.len() >= prefix.len(), "{path} -> {seen:?}");
                prop_assert_eq!(&seen[..prefix.len()], &prefix[..], "{}", path);
            }
        }
    }
}
