//! A few Prometheus counters, written by hand: requests by route and status. The outbox
//! gauges are read from the database when scraped. No label ever holds a key or a token:
//! routes are their templates (`/link/{token}`), never the path requested.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Metrics {
    pub fn record(&self, route: &str, status: u16) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((route.to_owned(), status)).or_default() += 1;
        }
    }

    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP keyward_http_requests_total HTTP requests by route template and status.\n",
        );
        out.push_str("# TYPE keyward_http_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((route, status), count) in requests.iter() {
                let _ = writeln!(
                    out,
                    "keyward_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
                );
            }
        }
    }
}
