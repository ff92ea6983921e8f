//! Start-up: the master key (from the environment or a key file made on first start),
//! its check against the store, and creating workspaces.

use crate::extract::token_hash;
use crate::secrets::MasterKey;
use crate::AppState;
use anyhow::{bail, Context};
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use leasehold_core::reminders::DEFAULT_LEAD_DAYS;
use leasehold_core::{is_currency_code, Role};
use leasehold_store::{NewMember, NewToken, NewWorkspace, StoreError};
use std::path::{Path, PathBuf};

const MASTER_KEY_FILE: &str = "master.key";
const MASTER_CHECK: &str = "master_key_check";

/// Where the data and secrets are.
#[derive(Clone)]
pub struct Settings {
    /// `sqlite://…` or `postgres://…`; defaults to `sqlite://DATA_DIR/leasehold.db`.
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    /// The master key itself (base64 or hex); otherwise `DATA_DIR/master.key`.
    pub master_key: Option<String>,
    /// Start even though the master key does not match the store's.
    pub force: bool,
    /// Client requests a second, per IP and per key (bursts of 10×); 0 turns it off.
    pub client_rate_limit: u32,
    /// How often lapsed leases are swept.
    pub sweep_interval: std::time::Duration,
    /// The longest the client protocol uses a cached license without a change notice.
    pub license_cache_ttl: std::time::Duration,
    /// Email and webhook delivery.
    pub notify: crate::notify::NotifySettings,
    /// How the store runs (the SQLite WAL's limit).
    pub store: leasehold_store::StoreOptions,
    /// Reverse proxies (addresses or networks) whose `X-Forwarded-For` is believed for
    /// the per-address limits; none by default.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How many connections are served at once (DESIGN §11).
    pub max_connections: usize,
    /// The Keygen facade's public address behind a rewriting proxy (DESIGN §9).
    pub keygen_public_url: Option<url::Url>,
    /// HTTPS: the certificate and key files (PEM), read again on SIGHUP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// `/metrics` on its own address instead of the public listener.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `/metrics` shows the busiest licenses' own series.
    pub metrics_per_license: bool,
    /// How often heartbeats absorbed in memory are written (`ZERO`: each as it comes).
    pub heartbeat_flush: std::time::Duration,
    /// Leases a second the flusher writes beyond those it must (tests lower it).
    pub heartbeat_flush_budget_per_s: usize,
}

impl Settings {
    /// Defaults for everything but where the data is.
    pub fn new(data_dir: PathBuf) -> Settings {
        Settings {
            database_url: None,
            data_dir,
            master_key: None,
            force: false,
            client_rate_limit: crate::limits::DEFAULT_PER_SECOND,
            sweep_interval: std::time::Duration::from_secs(1),
            license_cache_ttl: crate::license_cache::DEFAULT_TTL,
            notify: Default::default(),
            store: Default::default(),
            trusted_proxies: Vec::new(),
            max_connections: crate::http::DEFAULT_MAX_CONNECTIONS,
            keygen_public_url: None,
            tls: None,
            metrics_listen: None,
            metrics_per_license: false,
            heartbeat_flush: crate::heartbeats::DEFAULT_FLUSH,
            heartbeat_flush_budget_per_s: crate::heartbeats::FLUSH_BUDGET_PER_S,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("data_dir", &self.data_dir)
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "<redacted>"),
            )
            .field("force", &self.force)
            .field("client_rate_limit", &self.client_rate_limit)
            .field("notify", &self.notify)
            .field("store", &self.store)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("max_connections", &self.max_connections)
            .field("keygen_public_url", &self.keygen_public_url)
            .field("tls", &self.tls)
            .field("metrics_listen", &self.metrics_listen)
            .field("metrics_per_license", &self.metrics_per_license)
            .finish()
    }
}

/// A database URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Settings {
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("leasehold.db").display()))
    }
}

/// Opens the store and the master key, refusing a master key other than the one the
/// store was written with (unless `force`).
pub async fn open_state(settings: &Settings) -> anyhow::Result<AppState> {
    let url = settings.database_url();
    if url.starts_with("sqlite:") || settings.master_key.is_none() {
        create_private_dir(&settings.data_dir)?;
    }
    // A certificate that does not load stops the start, before anything is opened.
    let tls = match &settings.tls {
        Some(files) => Some(crate::tls::Certificates::load(files.clone())?),
        None => None,
    };
    let master = load_master_key(settings)?;
    let store = leasehold_store::open(&url, &settings.store)
        .await
        .with_context(|| format!("opening the store at {}", redact_url(&url)))?;
    let stored = store
        .meta_get_or_put(MASTER_CHECK, &master.check_value())
        .await?;
    if stored != master.check_value() {
        if settings.force {
            tracing::warn!("the master key differs from the one this store was written with; starting anyway (--force)");
        } else {
            bail!(
                "the master key differs from the one this store was written with: stored keys and \
                 secrets would not decrypt. Set LEASEHOLD_MASTER_KEY (or restore {MASTER_KEY_FILE}); \
                 --force starts anyway"
            );
        }
    }
    let signers = crate::signing::Signers::load(store.as_ref(), master.clone()).await?;
    Ok(AppState::new(crate::Shared {
        store,
        master,
        signers,
        limits: crate::limits::Limits::new(settings.client_rate_limit),
        sweep_interval: settings.sweep_interval,
        notifier: crate::notify::Notifier::new(settings.notify.clone())?,
        live: crate::live::LiveHub::new(
            settings.license_cache_ttl,
            crate::heartbeats::LeaseBook::new(
                settings.heartbeat_flush,
                settings.heartbeat_flush_budget_per_s,
            ),
        ),
        login_limits: crate::limits::Limits::login(),
        trusted_proxies: settings.trusted_proxies.clone(),
        max_connections: settings.max_connections,
        keygen_public_url: settings.keygen_public_url.clone(),
        tls,
        metrics_listen: settings.metrics_listen,
        metrics_per_license: settings.metrics_per_license,
        metrics_cache: Default::default(),
    }))
}

/// The SQLite database file of a store URL, as the store reads it (`None`: PostgreSQL).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    leasehold_store::sqlite_backup::sqlite_path(url)
}

const PG_DUMP: &str = "the store is PostgreSQL: back it up with pg_dump \
    (`pg_dump --format=custom --file=leasehold.dump \"$LEASEHOLD_DATABASE_URL\"`) and restore it \
    with pg_restore into an empty database; keep the master key (LEASEHOLD_MASTER_KEY) with the dump";

/// `leasehold backup OUT`: a consistent copy of the running SQLite store (DESIGN §10).
pub fn backup(settings: &Settings, out: &Path) -> anyhow::Result<()> {
    let Some(database) = sqlite_file(&settings.database_url()) else {
        bail!("{PG_DUMP}");
    };
    leasehold_store::sqlite_backup::backup(&database, out)
        .with_context(|| format!("backing up {} to {}", database.display(), out.display()))
}

/// `leasehold restore IN`: places a backup as the store of `settings`, which must have
/// no database yet, once the copy passes SQLite's integrity check, is of a migration
/// this build knows, and was written with the master key this store will run with.
pub fn restore(settings: &Settings, copy: &Path) -> anyhow::Result<()> {
    let Some(database) = sqlite_file(&settings.database_url()) else {
        bail!("{PG_DUMP}");
    };
    if database.exists() {
        bail!(
            "{} already has a database: restore into a data directory without one",
            database.display()
        );
    }
    if settings.master_key.is_none() && !settings.data_dir.join(MASTER_KEY_FILE).exists() {
        bail!(
            "no master key: copy the backed-up server's {MASTER_KEY_FILE} into {} (or set \
             LEASEHOLD_MASTER_KEY); without it the copy's keys and secrets do not decrypt",
            settings.data_dir.display()
        );
    }
    let master = load_master_key(settings)?;
    let copy_info = leasehold_store::sqlite_backup::inspect_copy(copy, MASTER_CHECK)
        .with_context(|| format!("checking {}", copy.display()))?;
    let known = leasehold_store::sqlite_backup::latest_migration();
    if copy_info.migration > known {
        bail!(
            "{} is from a newer Leasehold (migration {}; this one knows up to {known}): restore it with that version",
            copy.display(),
            copy_info.migration
        );
    }
    match copy_info.master_check {
        Some(check) if check == master.check_value() => {}
        Some(_) => bail!(
            "{} was written with another master key than this store's: put the backed-up \
             server's {MASTER_KEY_FILE} in {} (or set LEASEHOLD_MASTER_KEY)",
            copy.display(),
            settings.data_dir.display()
        ),
        None => bail!(
            "{} holds no master key check: not a Leasehold store",
            copy.display()
        ),
    }
    if let Some(dir) = database.parent() {
        create_private_dir(dir)?;
    }
    leasehold_store::sqlite_backup::place_copy(copy, &database)
        .with_context(|| format!("placing the copy at {}", database.display()))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

fn load_master_key(settings: &Settings) -> anyhow::Result<MasterKey> {
    if let Some(text) = &settings.master_key {
        return MasterKey::parse(text).context("LEASEHOLD_MASTER_KEY");
    }
    let path = settings.data_dir.join(MASTER_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => MasterKey::parse(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = MasterKey::generate();
            if write_private_file(&path, key.to_base64().as_bytes())? {
                tracing::info!(path = %path.display(), "made a new master key; back it up with the data");
                Ok(key)
            } else {
                // Another process starting at the same moment made it first: use theirs.
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                MasterKey::parse(&text).with_context(|| format!("reading {}", path.display()))
            }
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes a file only its owner can read, whole or not at all: written to a temporary
/// name, synced, then linked into place without replacing an existing file. Answers
/// false when the file exists already.
fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<bool> {
    use std::io::Write;
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// A workspace's slug: its name in lower case, runs of other characters as one dash.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.trim().chars() {
        if c.is_alphanumeric() {
            slug.extend(c.to_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_string()
}

/// Hashes a password with argon2id off the async runtime.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
    })
    .await?
}

/// An argon2id hash of a random password, made once: what an unknown address's sign-in
/// is checked against, so that it takes as long as a known one's.
pub async fn dummy_password_hash() -> String {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_init(|| async {
            let random = crate::session::random_token();
            hash_password(random).await.unwrap_or_default()
        })
        .await
        .clone()
}

/// Checks a password against its argon2id hash, off the async runtime.
pub async fn verify_password(password: String, hash: String) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// Creates a workspace, its owner and an owner API token; answers the token.
pub async fn create_workspace(
    state: &AppState,
    name: &str,
    email: &str,
    password: &str,
    currency: &str,
) -> anyhow::Result<String> {
    let name = name.trim();
    let slug = slugify(name);
    if slug.is_empty() {
        bail!("the workspace name needs a letter or digit");
    }
    let email = email.trim().to_lowercase();
    if !email.contains('@') || email.len() > 254 {
        bail!("{email:?} is not an email address");
    }
    if password.chars().count() < 8 {
        bail!("the password must be at least 8 characters");
    }
    if !is_currency_code(currency) {
        bail!("the currency must be an ISO 4217 code such as USD");
    }
    let password_hash = hash_password(password.to_string()).await?;
    let token = crate::new_api_token();
    let created = state
        .store
        .create_workspace(
            NewWorkspace {
                name: name.to_string(),
                slug,
                currency: currency.to_string(),
                reminder_lead_days: DEFAULT_LEAD_DAYS.to_vec(),
            },
            NewMember {
                email,
                password_hash,
                role: Role::Owner,
            },
            NewToken {
                name: "owner (leasehold init)".into(),
                role: Role::Owner,
                token_hash: token_hash(&token),
            },
        )
        .await;
    match created {
        Ok(_) => Ok(token),
        Err(StoreError::Conflict(message)) => bail!(message),
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_keep_letters_and_digits() {
        assert_eq!(slugify("  Acme Corp. (EU) "), "acme-corp-eu");
        assert_eq!(slugify("!!!"), "");
    }

    #[test]
    fn urls_lose_their_passwords_in_logs() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/leasehold"),
            "postgres://app:***@db:5432/leasehold"
        );
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
