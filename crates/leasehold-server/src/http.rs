//! The HTTP server loop (DESIGN §11): connections that hold the server without using it
//! are closed. A request's head must arrive within [`HEADER_TIMEOUT`] (hyper starts that
//! clock whenever a connection waits for a request, so an idle keep-alive connection is
//! closed after it too) and its body within [`BODY_TIMEOUT`]; at most `max_connections`
//! are open at once, and one past that is closed at once, so that half-open sockets can
//! never use up the process's file descriptors and `/healthz` keeps answering.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// The longest a connection may take to send a request's head, or stay idle between
/// requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a request's body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many connections are served at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Serves `router` on `listener` until `shutdown` resolves, then lets the requests in
/// flight finish (server-sent event streams are closed). With `tls`, each connection is
/// a TLS one (its handshake within [`HEADER_TIMEOUT`]) speaking HTTP/2 or HTTP/1.1, as
/// the client's ALPN asks.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    max_connections: usize,
    tls: Option<Arc<crate::tls::Certificates>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let tls = match tls {
        Some(certificates) => {
            let config = certificates
                .server_config()
                .map_err(|error| std::io::Error::other(format!("{error:#}")))?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        }
        None => None,
    };
    // HTTP/2 over TLS, as ALPN agreed: a dead peer is found by pings, and a connection
    // runs a bounded number of requests at once.
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_KEEP_ALIVE))
        .keep_alive_timeout(HEADER_TIMEOUT)
        .max_concurrent_streams(H2_MAX_STREAMS);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was
                    // accepted: wait a moment rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                max_connections,
                "connection limit reached: closing a new connection"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        match &tls {
            None => {
                let connection =
                    graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection ended");
                    }
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let (h1, h2) = (builder.clone(), h2.clone());
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            // The protocol ALPN agreed on, without sniffing (which waits
                            // for the client's first bytes with no timer).
                            let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            let io = TokioIo::new(stream);
                            let ended = if http2 {
                                watcher.watch(h2.serve_connection(io, service)).await
                            } else {
                                watcher.watch(h1.serve_connection(io, service)).await
                            };
                            if let Err(error) = ended {
                                tracing::debug!(%error, "connection ended");
                            }
                        }
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    // A server-sent event stream never ends by itself: past a while, the rest are cut.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    Ok(())
}

/// How often an HTTP/2 connection pings its peer (one that does not answer within
/// [`HEADER_TIMEOUT`] is closed).
const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The most requests one HTTP/2 connection runs at once.
const H2_MAX_STREAMS: u32 = 64;

/// How long shutting down waits for the requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
