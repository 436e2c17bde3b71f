//! `keyward rotate-master-key`: every stored secret re-encrypted under a new key, without
//! downtime (the flow audits it).

use keyward_server::config::{MasterKeySource, Settings};
use keyward_server::flows::master_key::{self, read_master_key};
use keyward_server::startup::open_store_and_cipher;
use keyward_server::store::Encrypted;

/// `keyward rotate-master-key --new-key-file F`.
pub async fn rotate_master_key(
    settings: &Settings,
    operator: &str,
    new_key_file: &std::path::Path,
) -> anyhow::Result<()> {
    let new = read_master_key(
        &MasterKeySource::File(new_key_file.to_path_buf()),
        "--new-key-file",
    )?;
    let (store, old) = open_store_and_cipher(settings).await?;
    eprintln!("re-encrypting under the new key (safe to interrupt and run again)…");
    let rotation = master_key::rotate(&store, &old, &new, operator, |which, counts| {
        let what = match which {
            Encrypted::SecretKeys => "secret keys",
            Encrypted::EmailBodies => "email bodies",
            Encrypted::WebhookSecrets => "webhook secrets",
        };
        eprintln!(
            "  {what}: {} re-encrypted, {} already under the new key",
            counts.rotated, counts.already
        );
    })
    .await?;
    let unreadable = rotation.unreadable();
    let detail = rotation.describe();
    println!("{detail}.");
    println!("The database's key check is now under the new key. Restart every node with KEYWARD_MASTER_KEY(_FILE) set to the new key and without KEYWARD_MASTER_KEY_PREVIOUS; keep the old key until you are sure (docs/deployment.md).");
    if unreadable > 0 {
        anyhow::bail!("{unreadable} value(s) decrypted under neither key and were left as they were: they were unreadable before the rotation too (see `keyward check-config`)");
    }
    Ok(())
}
