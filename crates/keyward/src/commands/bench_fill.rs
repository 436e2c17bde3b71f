//! `keyward bench-fill` (hidden): a store of N active partners, fast, for bench/.

use anyhow::Context as _;
use keyward_core::PartnerCode;
use keyward_server::config::Settings;
use secrecy::ExposeSecret;
use std::path::Path;

pub async fn bench_fill(
    settings: &Settings,
    partners: u64,
    sample: u64,
    out: &Path,
    single_use: u64,
) -> anyhow::Result<()> {
    use keyward_core::{Email, KeyPair, PartnerId};
    use keyward_server::crypto::secret_key_aad;
    use keyward_server::store::ImportedPartner;
    use std::io::Write;
    let (store, cipher) = keyward_server::startup::open_store_and_cipher(settings).await?;
    let every = (partners / sample.max(1)).max(1);
    // Readable by the operator alone, before anything is written: the samples hold the bench
    // partners' secret keys. Set on the open file, so that a file written over (whose mode
    // `create` would keep) is made private too.
    let file = std::fs::File::create(out)
        .with_context(|| format!("could not create the samples file {}", out.display()))?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let mut samples = std::io::BufWriter::new(file);
    let now = chrono::Utc::now().timestamp_millis();
    let started = std::time::Instant::now();
    let mut batch = Vec::with_capacity(5_000);
    let mut sampled = Vec::new();
    for i in 0..partners {
        let keys = KeyPair::generate(&mut rand::rngs::OsRng);
        let id = PartnerId::new_v7();
        let key_id = uuid::Uuid::now_v7().to_string();
        let secret = keys.secret.expose_secret();
        let ciphertext =
            cipher.encrypt(secret.as_bytes(), &secret_key_aad(id.as_str(), &key_id))?;
        if i % every == 0 {
            let body = keyward_core::signature::sign_body(
                format!(r#"{{"bench":{i}}}"#).as_bytes(),
                &keys.secret,
                keyward_core::signature::MessageForm::AsSent,
            )?;
            // The secret too, for bench/'s nginx + njs peer, which checks the same signature.
            let line = serde_json::json!({
                "public_key": keys.public.as_str(),
                "secret_key": secret,
                "body": body,
            });
            writeln!(samples, "{line}")?;
            sampled.push(keys.clone());
        }
        batch.push(ImportedPartner {
            id,
            code: PartnerCode::parse(&format!("BENCH-{i:08}")).context("a bench code")?,
            email: Email::parse(&format!("p{i}@bench.example")).context("a bench email")?,
            key_id,
            public_key_hash: keys.public.hash(),
            public_key_hint: keys.public.redacted(),
            secret_ciphertext: ciphertext,
            secret_key_hash: keys.secret.hash(),
            created_at: now,
            allowed_ips: None,
            legacy: false,
        });
        if batch.len() == 5_000 || i + 1 == partners {
            store.import_active_partners(&batch).await?;
            batch.clear();
            eprint!("\r{} of {partners} partners stored", i + 1);
        }
    }
    samples.flush()?;
    if single_use > 0 {
        write_single_use(&out.with_file_name("single-use.tsv"), &sampled, single_use)?;
    }
    // The store is left as a server leaves it: the reminders of the settings' expiry policy
    // planned and the policy recorded, so that the first `serve` on it does not re-plan a
    // million pairs in the background while it is measured.
    let ctx = keyward_server::flows::Context::new(
        std::sync::Arc::new(settings.clone()),
        store,
        cipher,
        std::sync::Arc::new(keyward_server::clock::SystemClock),
    );
    keyward_server::flows::reschedule_after_policy_change(&ctx).await?;
    eprintln!(
        "\n{partners} partners in {:.1} s; {} signed samples in {}",
        started.elapsed().as_secs_f64(),
        partners.div_ceil(every),
        out.display()
    );
    Ok(())
}

/// `count` signed bodies that all differ (a `nonce` each), of the sampled partners in turn:
/// each may pass a single-use route once.
fn write_single_use(
    path: &Path,
    sampled: &[keyward_core::KeyPair],
    count: u64,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut lines = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (n, keys) in (0..count).zip(sampled.iter().cycle()) {
        let body = keyward_core::signature::sign_body(
            format!(r#"{{"bench":"single-use","nonce":{n}}}"#).as_bytes(),
            &keys.secret,
            keyward_core::signature::MessageForm::AsSent,
        )?;
        writeln!(lines, "{}\t{body}", keys.public.as_str())?;
    }
    lines.flush()?;
    Ok(())
}
