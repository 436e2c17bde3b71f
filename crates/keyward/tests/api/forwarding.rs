//! Behind a trusted proxy, a spoofed client address never passes: whatever a client writes to
//! the left of the proxy's own entry, or an entry the proxy wrote that cannot be read, the
//! allow-list and the per-IP limit see the address the proxy vouches for.

use crate::helpers::*;
use keyward_core::{AllowedIps, PartnerCode};
use keyward_server::config::ForwardedHeader;

async fn whoami_from(app: &TestApp, partner: &Partner, header: (&str, &str)) -> (u16, String) {
    let raw = sign("{}", &partner.secret_key);
    let response = app
        .client
        .post(format!("{}{WHOAMI}", app.address))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", partner.public_key))
        .header(header.0, header.1)
        .body(raw)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    (status, body["code"].as_str().unwrap_or("").to_owned())
}

async fn partner_allowed_from(app: &TestApp, code: &str, allowed: &str) -> Partner {
    let partner = app
        .onboarded_partner(code, &format!("ops@{}.example", code.to_lowercase()))
        .await;
    keyward_server::flows::admin::set_allowed_ips(
        &app.state,
        &PartnerCode::parse(code).unwrap(),
        AllowedIps::parse([allowed]).unwrap(),
        OPERATOR,
    )
    .await
    .unwrap();
    partner
}

#[tokio::test]
async fn x_forwarded_for_is_read_from_the_right_and_stops_at_what_it_cannot_read() {
    let app = spawn_app_with(|s| s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let partner = partner_allowed_from(&app, "XFF", "9.9.9.9").await;
    // The proxy's own entry, in every form proxies write it.
    for value in [
        "6.6.6.6, 9.9.9.9",
        "6.6.6.6, 9.9.9.9:1234",
        "6.6.6.6, ::ffff:9.9.9.9",
    ] {
        assert_eq!(
            whoami_from(&app, &partner, ("x-forwarded-for", value))
                .await
                .0,
            200,
            "{value}"
        );
    }
    // The client's own entries to the left of one the proxy wrote but keyward cannot read:
    // the last trusted hop (the proxy itself) is the client, which the allow-list refuses.
    for value in [
        "9.9.9.9, unknown",
        "9.9.9.9, [v6]:port",
        "9.9.9.9, 9.9.9.9:x",
        "9.9.9.9, _hidden",
    ] {
        assert_eq!(
            whoami_from(&app, &partner, ("x-forwarded-for", value)).await,
            (403, "ip_not_allowed".to_owned()),
            "{value}"
        );
    }
    // The Forwarded header is not read unless it is the one configured.
    assert_eq!(
        whoami_from(&app, &partner, ("forwarded", "for=9.9.9.9")).await,
        (403, "ip_not_allowed".to_owned())
    );
}

#[tokio::test]
async fn the_forwarded_header_works_the_same_when_configured() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.forwarded_header = ForwardedHeader::Forwarded;
    })
    .await;
    let partner = partner_allowed_from(&app, "FWD", "2001:db8::7").await;
    let ok = r#"for=6.6.6.6, for="[2001:db8::7]:4711";proto=https"#;
    assert_eq!(whoami_from(&app, &partner, ("forwarded", ok)).await.0, 200);
    for spoof in [
        "for=\"[2001:db8::7]\", for=unknown",
        "for=\"[2001:db8::7]\", proto=https",
    ] {
        assert_eq!(
            whoami_from(&app, &partner, ("forwarded", spoof)).await,
            (403, "ip_not_allowed".to_owned()),
            "{spoof}"
        );
    }
    assert_eq!(
        whoami_from(&app, &partner, ("x-forwarded-for", "2001:db8::7")).await,
        (403, "ip_not_allowed".to_owned())
    );
}

#[tokio::test]
async fn the_per_ip_limit_counts_the_address_the_proxy_vouches_for() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.ip_rate_limit_per_minute = 2;
    })
    .await;
    let onboard = |code: String, xff: &'static str| {
        let app = &app;
        async move {
            app.client
                .post(format!("{}{ONBOARD}", app.address))
                .header("content-type", "application/json")
                .header("x-forwarded-for", xff)
                .body(format!(
                    r#"{{"partner_code":"{code}","email":"x@{code}.example"}}"#
                ))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // A different made-up address in front each time; the proxy says it is one client.
    let mut statuses = Vec::new();
    for (i, xff) in [
        "1.1.1.1, 203.0.113.5",
        "2.2.2.2, 203.0.113.5",
        "3.3.3.3, 203.0.113.5",
    ]
    .into_iter()
    .enumerate()
    {
        statuses.push(onboard(format!("LIM{i}"), xff).await);
    }
    assert_eq!(statuses, [200, 200, 429]);
    // Another client behind the same proxy has its own budget.
    assert_eq!(onboard("LIMX".into(), "203.0.113.6").await, 200);
}
