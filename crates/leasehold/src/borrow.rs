//! `leasehold borrow` and `leasehold return`: a floating seat borrowed for offline use
//! (DESIGN §7) by the user of a wrapped program, kept as a signed license file that
//! `leasehold run` then honours, online or offline, until the borrow ends.

use crate::run::ServerArgs;
use leasehold_client::{verify_license_file, Holder, LicenseFilePayload};

#[derive(clap::Args)]
pub struct BorrowArgs {
    #[command(flatten)]
    pub to: ServerArgs,
    /// For how many days (1 to the license's `max_borrow_days`).
    #[arg(long)]
    pub days: i64,
}

#[derive(clap::Args)]
pub struct ReturnArgs {
    #[command(flatten)]
    pub to: ServerArgs,
}

/// Borrows a seat and keeps its license file; answers a message for the user.
pub async fn borrow(args: BorrowArgs) -> anyhow::Result<String> {
    let client = args.to.client().map_err(anyhow::Error::msg)?;
    let holder = args.to.holder();
    let borrowed = client.borrow(&holder, args.days).await?;
    let path = args.to.borrow_file();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(&borrowed.license_file)?;
    // Written whole, then moved in place: a crash never leaves half a file.
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, &path)?;
    Ok(format!(
        "borrowed a seat until {} ({}); its license file is {}",
        borrowed.borrowed_until,
        borrowed.id,
        path.display()
    ))
}

/// Returns the borrowed seat early and removes its file; answers a message for the user.
pub async fn give_back(args: ReturnArgs) -> anyhow::Result<String> {
    let client = args.to.client().map_err(anyhow::Error::msg)?;
    let path = args.to.borrow_file();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("no borrowed seat at {}: {e}", path.display()))?;
    let payload = read_payload(&text)?;
    let borrow_id = payload
        .borrow_id
        .ok_or_else(|| anyhow::anyhow!("{} is not a borrowed seat's file", path.display()))?;
    let returned = client
        .return_borrow(&borrow_id, &payload.fingerprint)
        .await?;
    std::fs::remove_file(&path)?;
    Ok(format!(
        "returned the borrowed seat at {}",
        returned.returned_at
    ))
}

/// The payload of a borrow file, as the server wrote it (the server checks the return).
fn read_payload(text: &str) -> anyhow::Result<LicenseFilePayload> {
    use base64::Engine;
    let file: leasehold_proto::LicenseFile = serde_json::from_str(text)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(&file.payload)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// When this machine's borrow ends, if it holds one that `run` may use: its file is
/// there, verifies with the public key (a borrow is used only with `--public-key`), is
/// for this machine and OS user, and has not ended.
pub fn borrowed_until(args: &ServerArgs, holder: &Holder) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = std::fs::read_to_string(args.borrow_file()).ok()?;
    let public_key = leasehold_client::parse_public_key(args.public_key.as_deref()?).ok()?;
    let payload = verify_license_file(
        &text,
        &public_key,
        Some(&holder.fingerprint),
        chrono::Utc::now(),
    )
    .ok()?;
    (payload.kind.as_deref() == Some("borrow")
        && payload.os_user.as_deref() == Some(holder.os_user.as_str()))
    .then_some(payload.valid_until)
}
