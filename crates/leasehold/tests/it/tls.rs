//! HTTPS without a proxy (DESIGN §10): `leasehold serve --tls-cert --tls-key` speaks
//! HTTP/1.1 and HTTP/2 over rustls; a SIGHUP serves a renewed certificate without a
//! restart, and a bad new pair keeps the one in use; a key that is not the
//! certificate's is refused at start; the SDK trusts a private CA from a file.

use crate::harness::eventually;
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A certificate authority and a server certificate it issued for 127.0.0.1.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki(name: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process, killed when dropped (a failed assertion leaves none behind).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `leasehold serve` over HTTPS on a free port, its log in `log`, once it answers; a
/// port another process took meanwhile is tried again with another.
async fn serve_tls(
    dir: &Path,
    cert: &Path,
    key: &Path,
    log: &Path,
    ca_pem: &str,
) -> (Server, String) {
    for _ in 0..3 {
        let port = free_port();
        let mut server = Server(spawn_tls(dir, port, cert, key, log));
        let base = format!("https://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline && !server_exited(&mut server) {
            if ready(&client(ca_pem, false), &base).await.is_some() {
                return (server, base);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    panic!(
        "the HTTPS server did not come up (its log: {})",
        log.display()
    );
}

fn server_exited(server: &mut Server) -> bool {
    server.0.try_wait().ok().flatten().is_some()
}

fn spawn_tls(dir: &Path, port: u16, cert: &Path, key: &Path, log: &Path) -> Child {
    let output = || {
        Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
    };
    Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env_remove("LEASEHOLD_MASTER_KEY")
        .env("LEASEHOLD_LOG", "info")
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap()
}

/// A client that trusts only `ca_pem`; `http1`: never HTTP/2. Each is new, so its
/// connection is new: an open connection keeps the certificate it began with.
fn client(ca_pem: &str, http1: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .pool_max_idle_per_host(0)
        .https_only(true);
    if http1 {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

async fn ready(client: &reqwest::Client, base: &str) -> Option<reqwest::Response> {
    client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .ok()
        .filter(|r| r.status() == StatusCode::OK)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_speaks_both_http_versions_and_renews_its_certificate_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (pki("first"), pki("second"));
    let cert = write(dir.path(), "cert.pem", &first.cert_pem);
    let key = write(dir.path(), "key.pem", &first.key_pem);
    let log = dir.path().join("serve.log");
    let (mut server, base) = serve_tls(dir.path(), &cert, &key, &log, &first.ca_pem).await;
    let port = base.rsplit(':').next().unwrap().to_string();
    // HTTP/2 by ALPN, and HTTP/1.1 for a client that asks for it.
    let h2 = ready(&client(&first.ca_pem, false), &base).await.unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    let h1 = ready(&client(&first.ca_pem, true), &base).await.unwrap();
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    // Plain HTTP gets no answer from a TLS listener.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await;
    assert!(plain.is_err() || plain.unwrap().status() != StatusCode::OK);

    // The certificate is renewed (here, by another CA): a SIGHUP serves it from the next
    // connection on, without a restart.
    write(dir.path(), "cert.pem", &second.cert_pem);
    write(dir.path(), "key.pem", &second.key_pem);
    let hangup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server.0.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };
    assert!(ready(&client(&second.ca_pem, false), &base).await.is_none());
    hangup();
    let renewed = eventually(30, || async {
        ready(&client(&second.ca_pem, false), &base).await.is_some()
    })
    .await;
    assert!(
        renewed,
        "the renewed certificate was not served after SIGHUP"
    );
    assert!(ready(&client(&first.ca_pem, false), &base).await.is_none());

    // A bad pair (the first certificate with the second key): the renewed one stays,
    // and the log says why.
    write(dir.path(), "cert.pem", &first.cert_pem);
    hangup();
    let told = eventually(30, || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("is not the key of the certificate")
    })
    .await;
    assert!(told, "the log does not say why the new pair was refused");
    assert!(ready(&client(&second.ca_pem, false), &base).await.is_some());
    assert!(!server_exited(&mut server), "the server stopped");

    // The SDK trusts a private CA from a file.
    let ca_file = write(dir.path(), "ca.pem", &second.ca_pem);
    let sdk = leasehold_client::Client::new(&base, "NO-SUCH-KEY")
        .unwrap()
        .with_ca_file(&ca_file)
        .unwrap()
        .with_attempts(1);
    let answer = sdk.validate(None, None).await.unwrap();
    assert_eq!(answer.code, "NOT_FOUND");
    let untrusting = leasehold_client::Client::new(&base, "NO-SUCH-KEY")
        .unwrap()
        .with_attempts(1);
    assert!(untrusting.validate(None, None).await.is_err());
    drop(server);
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (pki("first"), pki("second"));
    let cert = write(dir.path(), "cert.pem", &first.cert_pem);
    let key = write(dir.path(), "key.pem", &second.key_pem);
    let output = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env_remove("LEASEHOLD_MASTER_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not the key of the certificate"),
        "{stderr}"
    );
    // A certificate alone is refused by the command line.
    let output = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(["serve", "--tls-cert"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!output.status.success());
}
