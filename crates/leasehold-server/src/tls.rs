//! HTTPS without a proxy in front (DESIGN §10): rustls, HTTP/1.1 and HTTP/2, with a
//! certificate read from PEM files and read again on SIGHUP, so that a renewed
//! certificate is served without a restart. A pair that does not load (a missing file, a
//! key that is not the certificate's) is refused at start; on a reload it keeps the pair
//! in use and says why.

use anyhow::{anyhow, bail, Context};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The certificate (chain) and private key files, PEM.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The server's certificate, replaced as a whole on reload.
pub struct Certificates {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("files", &self.files)
            .finish()
    }
}

impl Certificates {
    /// Loads the pair, refusing one that does not load or match.
    pub fn load(files: TlsFiles) -> anyhow::Result<Arc<Certificates>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = load_pair(&files, &provider)?;
        Ok(Arc::new(Certificates {
            files,
            provider,
            current: RwLock::new(current),
        }))
    }

    /// Reads the files again: the new pair is served from the next handshake on, or, if
    /// it does not load, the pair in use stays (the error says why).
    pub fn reload(&self) -> anyhow::Result<()> {
        let pair = load_pair(&self.files, &self.provider)?;
        let mut current = self
            .current
            .write()
            .map_err(|_| anyhow!("the certificate lock is poisoned"))?;
        *current = pair;
        Ok(())
    }

    /// The rustls configuration that serves these certificates, offering HTTP/2 and
    /// HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("the TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|pair| pair.clone())
    }
}

fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = read_chain(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| {
        anyhow!(
            "reading the TLS key {}: {error} (a PEM private key: PKCS#8, PKCS#1 or SEC1)",
            files.key.display()
        )
    })?;
    let pair = CertifiedKey::from_der(chain, key, provider).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => anyhow!(
            "the TLS key {} is not the key of the certificate {}",
            files.key.display(),
            files.cert.display()
        ),
        error => anyhow!("loading the TLS key {}: {error}", files.key.display()),
    })?;
    Ok(Arc::new(pair))
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| anyhow!("reading the TLS certificate {}: {error}", path.display()))?;
    if chain.is_empty() {
        bail!(
            "the TLS certificate file {} holds no certificate (PEM, `BEGIN CERTIFICATE`)",
            path.display()
        );
    }
    Ok(chain)
}

/// Reads the certificate files again on each SIGHUP (`systemctl reload`, or a renewal
/// hook's `kill -HUP`); without TLS, a SIGHUP is only logged (it does not stop the
/// server).
/// The handler is in place when this returns (a SIGHUP just after start is caught too).
pub fn reload_on_hangup(
    certificates: Option<Arc<Certificates>>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(certificates) = &certificates else {
                tracing::info!("SIGHUP: no TLS files to read again");
                continue;
            };
            match certificates.reload() {
                Ok(()) => {
                    tracing::info!(files = ?certificates.files, "SIGHUP: TLS certificate read again")
                }
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "SIGHUP: the new TLS files do not load; serving the certificate in use"
                ),
            }
        }
    }))
}
