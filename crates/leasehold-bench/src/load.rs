//! The load generator: kept-alive connections driven at a scenario in turns, and what
//! they measured.

use axum::http::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one measurement found.
#[derive(Debug, Default, Clone)]
pub(crate) struct Measured {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// Answers 429 (the server's client rate limit): answered, but not the work asked.
    pub(crate) throttled: u64,
    /// Other 4xx answers: a full license's refusal (expected in checkout), a heartbeat's
    /// lease gone (never expected: it would measure refusals, not heartbeats).
    pub(crate) refused: u64,
    pub(crate) seconds: f64,
    pub(crate) latencies_us: Vec<u32>,
    /// What the first error was (the request, and the server's status and body or the
    /// transport's failure), so that a run that had one says which.
    pub(crate) first_error: Option<String>,
}

impl Measured {
    /// Counts `other`'s requests and time in with these (percentiles need
    /// [`Measured::sorted`] after).
    pub(crate) fn add(&mut self, other: Measured) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.throttled += other.throttled;
        self.refused += other.refused;
        self.seconds += other.seconds;
        self.latencies_us.extend(other.latencies_us);
        self.first_error = self.first_error.take().or(other.first_error);
    }

    pub(crate) fn sorted(mut self) -> Measured {
        self.latencies_us.sort_unstable();
        self
    }

    pub(crate) fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let index = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[index]) / 1000.0
    }
}

/// What to send after an answered request (a checkin after a checkout).
pub(crate) type Follow =
    Arc<dyn Fn(&Value, &Value) -> Option<(reqwest::Method, String, Value)> + Send + Sync>;

/// One request a connection makes next.
pub(crate) type Step =
    Box<dyn FnMut(&mut rand::rngs::StdRng) -> (reqwest::Method, String, Option<Value>) + Send>;

/// No request of the load waits longer than this past the end of the run.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Drives `connections` connections for `duration`, each looping over what `make` gives
/// it; a request counts as answered unless it failed in transport or answered 5xx.
/// The latencies come back unsorted ([`Measured::sorted`]).
pub(crate) async fn drive(
    bases: &[String],
    connections: usize,
    duration: Duration,
    make: impl Fn(usize) -> Step,
    follow: Option<Follow>,
) -> Measured {
    let deadline = Instant::now() + duration;
    let give_up = tokio::time::Instant::from_std(deadline + REQUEST_TIMEOUT);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let mut connection = Connection::new(&bases[c % bases.len()], give_up);
        let mut step = make(c);
        let follow = follow.clone();
        tasks.push(tokio::spawn(async move {
            let mut measured = Measured::default();
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
            while Instant::now() < deadline {
                let (method, path, body) = step(&mut rng);
                let answer = connection
                    .timed(method, &path, body.as_ref(), &mut measured)
                    .await;
                let (Some(answer), Some(follow)) = (answer, &follow) else {
                    continue;
                };
                let answer = serde_json::from_slice(&answer).unwrap_or(Value::Null);
                if let Some((method, path, body)) =
                    follow(body.as_ref().unwrap_or(&Value::Null), &answer)
                {
                    connection
                        .timed(method, &path, Some(&body), &mut measured)
                        .await;
                }
            }
            measured
        }));
    }
    let mut total = Measured::default();
    for task in tasks {
        if let Ok(m) = task.await {
            total.add(m);
        }
    }
    total.seconds = started.elapsed().as_secs_f64();
    total
}

/// What one measurement drives: the servers, the request each connection makes next, and
/// what follows an answer.
pub(crate) struct Load {
    pub(crate) bases: Vec<String>,
    pub(crate) make: Box<dyn Fn(usize) -> Step + Send + Sync>,
    pub(crate) follow: Option<Follow>,
}

/// The longest one load is driven at a time.
pub(crate) const TURN: Duration = Duration::from_secs(2);
/// The pause after each turn, so that what a turn left to do in the background (the
/// checkpointer copying its writes) is done before the next load is measured.
pub(crate) const SETTLE: Duration = Duration::from_millis(250);

/// Drives each load for `duration` in all, in turns of at most `longest` (the first load,
/// the second, …, then the first again, with a [`SETTLE`] pause after each), so that the
/// machine's drift in speed (this VM's `/healthz` ranged from 35k to 80k/s within an
/// hour) falls on every load alike and their ratios hold. Answers one measurement per
/// load, in their order.
pub(crate) async fn measure_in_turns(
    loads: &[Load],
    connections: usize,
    duration: Duration,
    longest: Duration,
) -> Vec<Measured> {
    let turns = duration
        .as_millis()
        .div_ceil(longest.as_millis().max(1))
        .clamp(1, u128::from(u32::MAX));
    let turn = duration / u32::try_from(turns).unwrap_or(u32::MAX);
    let mut measured: Vec<Measured> = loads.iter().map(|_| Measured::default()).collect();
    for _ in 0..turns {
        for (load, total) in loads.iter().zip(&mut measured) {
            let this_turn = drive(
                &load.bases,
                connections,
                turn,
                &load.make,
                load.follow.clone(),
            )
            .await;
            total.add(this_turn);
            tokio::time::sleep(SETTLE).await;
        }
    }
    measured.into_iter().map(Measured::sorted).collect()
}

/// One connection of the load generator. To a plain `http://` server it is one kept-alive
/// HTTP/1.1 connection of hyper's own, polled by the task that sends on it and opened
/// again after a failure: the load shares the machine's cores with the server it
/// measures, and reqwest (a pool, a URL parsed, a timer and a second task per request)
/// cost about twice as much CPU per request, taken from the server. `https://` servers
/// are reached through reqwest.
pub(crate) struct Connection {
    /// No request waits past this.
    pub(crate) give_up: tokio::time::Instant,
    pub(crate) transport: Transport,
}

pub(crate) enum Transport {
    Plain {
        /// `host:port` to connect to.
        address: String,
        host: axum::http::HeaderValue,
        /// The base URL's path, before every request's (empty at the root).
        prefix: String,
        open: Option<PlainConnection>,
    },
    Tls {
        client: reqwest::Client,
        base: String,
    },
}

pub(crate) type PlainBody = http_body_util::Full<axum::body::Bytes>;

pub(crate) struct PlainConnection {
    pub(crate) sender: hyper::client::conn::http1::SendRequest<PlainBody>,
    /// Whether `driver` finished (the connection ended).
    pub(crate) ended: bool,
    /// Reads and writes the socket; it is polled alongside each request.
    pub(crate) driver: std::pin::Pin<
        Box<
            hyper::client::conn::http1::Connection<
                hyper_util::rt::TokioIo<tokio::net::TcpStream>,
                PlainBody,
            >,
        >,
    >,
}

/// Why a request of the load got no answer (counted as an error, not told apart).
pub(crate) struct NoAnswer;

impl Connection {
    pub(crate) fn new(base: &str, give_up: tokio::time::Instant) -> Connection {
        let plain = reqwest::Url::parse(base)
            .ok()
            .filter(|url| url.scheme() == "http")
            .and_then(|url| {
                let name = url.host_str()?;
                let port = url.port_or_known_default()?;
                let host = match url.port() {
                    Some(port) => format!("{name}:{port}"),
                    None => name.to_string(),
                };
                Some((
                    format!("{name}:{port}"),
                    axum::http::HeaderValue::from_str(&host).ok()?,
                    url.path().trim_end_matches('/').to_string(),
                ))
            });
        let transport = match plain {
            Some((address, host, prefix)) => Transport::Plain {
                address,
                host,
                prefix,
                open: None,
            },
            None => Transport::Tls {
                client: reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap_or_default(),
                base: base.to_string(),
            },
        };
        Connection { give_up, transport }
    }

    /// Sends one request and records its latency and outcome in `measured`; answers the
    /// body of a success.
    pub(crate) async fn timed(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        measured: &mut Measured,
    ) -> Option<axum::body::Bytes> {
        let started = Instant::now();
        let body = body.and_then(|b| serde_json::to_vec(b).ok());
        let request = format!("{method} {path}");
        let result =
            tokio::time::timeout_at(self.give_up, self.transport.send(method, path, body)).await;
        measured.requests += 1;
        let answer = match result {
            Ok(Ok((status, answer))) if !status.is_server_error() => {
                if status == StatusCode::TOO_MANY_REQUESTS {
                    measured.throttled += 1;
                } else if status.is_client_error() {
                    measured.refused += 1;
                }
                status.is_success().then_some(answer)
            }
            failed => {
                measured.errors += 1;
                if measured.first_error.is_none() {
                    measured.first_error = Some(match failed {
                        Ok(Ok((status, answer))) => format!(
                            "{request}: {status} {}",
                            String::from_utf8_lossy(&answer[..answer.len().min(300)])
                        ),
                        Ok(Err(NoAnswer)) => {
                            format!("{request}: no answer (the connection failed)")
                        }
                        Err(_) => format!("{request}: no answer before the run's end"),
                    });
                }
                // A connection that failed or timed out is opened anew.
                if let Transport::Plain { open, .. } = &mut self.transport {
                    *open = None;
                }
                None
            }
        };
        measured
            .latencies_us
            .push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        answer
    }
}

impl Transport {
    pub(crate) async fn send(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, axum::body::Bytes), NoAnswer> {
        match self {
            Transport::Tls { client, base } => {
                let mut request = client.request(method, format!("{base}{path}"));
                if let Some(body) = body {
                    request = request
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body);
                }
                let response = request.send().await.map_err(|_| NoAnswer)?;
                let status = response.status();
                Ok((status, response.bytes().await.map_err(|_| NoAnswer)?))
            }
            Transport::Plain {
                address,
                host,
                prefix,
                open,
            } => {
                // A kept connection the server has closed since (it answered
                // `Connection: close`, or timed out an idle one) is opened again: nothing
                // was sent on it yet.
                let mut kept = open.take();
                if let Some(connection) = &mut kept {
                    if connection.ready().await.is_err() {
                        kept = None;
                    }
                }
                let connection = match kept {
                    Some(connection) => open.insert(connection),
                    None => {
                        let mut connection = PlainConnection::open(address).await?;
                        connection.ready().await?;
                        open.insert(connection)
                    }
                };
                let mut request = axum::http::Request::builder()
                    .method(method)
                    .uri(format!("{prefix}{path}"))
                    .header(axum::http::header::HOST, host.clone());
                if body.is_some() {
                    request = request.header(axum::http::header::CONTENT_TYPE, "application/json");
                }
                let request = request
                    .body(PlainBody::new(body.unwrap_or_default().into()))
                    .map_err(|_| NoAnswer)?;
                connection.answer(request).await
            }
        }
    }
}

impl PlainConnection {
    pub(crate) async fn open(address: &str) -> Result<PlainConnection, NoAnswer> {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|_| NoAnswer)?;
        stream.set_nodelay(true).map_err(|_| NoAnswer)?;
        let (sender, driver) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|_| NoAnswer)?;
        Ok(PlainConnection {
            sender,
            ended: false,
            driver: Box::pin(driver),
        })
    }

    /// Waits until the connection can take a request (the last answer's end read).
    pub(crate) async fn ready(&mut self) -> Result<(), NoAnswer> {
        let PlainConnection {
            sender,
            driver,
            ended,
        } = self;
        while_driven(driver, ended, sender.ready())
            .await?
            .map_err(|_| NoAnswer)
    }

    pub(crate) async fn answer(
        &mut self,
        request: axum::http::Request<PlainBody>,
    ) -> Result<(StatusCode, axum::body::Bytes), NoAnswer> {
        use http_body_util::BodyExt;
        let PlainConnection {
            sender,
            driver,
            ended,
        } = self;
        let response = while_driven(driver, ended, sender.send_request(request)).await?;
        let (parts, body) = response.map_err(|_| NoAnswer)?.into_parts();
        let body = while_driven(driver, ended, body.collect()).await?;
        Ok((parts.status, body.map_err(|_| NoAnswer)?.to_bytes()))
    }
}

/// Runs `work` while `driver` reads and writes its connection; `NoAnswer` should the
/// connection end before `work` can finish. `ended` records that it did: a finished
/// driver is not polled again.
pub(crate) async fn while_driven<D, F>(
    driver: &mut std::pin::Pin<Box<D>>,
    ended: &mut bool,
    work: F,
) -> Result<F::Output, NoAnswer>
where
    D: std::future::Future + ?Sized,
    F: std::future::Future,
{
    let mut work = std::pin::pin!(work);
    if !*ended {
        tokio::select! {
            biased;
            done = &mut work => return Ok(done),
            _ = driver.as_mut() => *ended = true,
        }
    }
    // What the connection delivered before it ended (an answer with `Connection:
    // close`) may still finish the work.
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match work.as_mut().poll(cx) {
            std::task::Poll::Ready(done) => Ok(done),
            std::task::Poll::Pending => Err(NoAnswer),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers each request `{}` and closes the connection after it.
    pub(crate) async fn closing_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let answer =
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        format!("http://{address}")
    }

    /// A server that answers `{}` and notes, as `name`, each request in the order they come.
    pub(crate) async fn noting_server(
        name: usize,
        log: Arc<std::sync::Mutex<Vec<usize>>>,
    ) -> String {
        let note = move || {
            log.lock().expect("the log").push(name);
            async { "{}" }
        };
        let app = Router::new().route("/", axum::routing::get(note));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("its address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    #[tokio::test]
    pub(crate) async fn loads_are_measured_in_turns_that_add_up_to_the_duration() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut loads = Vec::new();
        for name in 0..2 {
            loads.push(Load {
                bases: vec![noting_server(name, log.clone()).await],
                make: Box::new(|_| Box::new(|_| (reqwest::Method::GET, "/".to_string(), None))),
                follow: None,
            });
        }
        let measured = measure_in_turns(
            &loads,
            2,
            Duration::from_secs(1),
            Duration::from_millis(400),
        )
        .await;
        // 1 s in turns of at most 400 ms: three turns of 333 ms each, the loads in order.
        let log = log.lock().expect("the log").clone();
        let mut turns = log.clone();
        turns.dedup();
        assert_eq!(turns, [0, 1, 0, 1, 0, 1]);
        assert_eq!(measured.len(), 2);
        for (name, m) in measured.iter().enumerate() {
            let answered = log.iter().filter(|n| **n == name).count() as u64;
            assert!(answered > 0);
            assert_eq!((m.requests, m.errors), (answered, 0));
            assert_eq!(m.latencies_us.len() as u64, answered);
            assert!(m.latencies_us.is_sorted(), "percentiles need them sorted");
            assert!(m.seconds >= 0.99, "{} s", m.seconds);
        }
    }

    pub(crate) fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    pub(crate) async fn a_connection_the_server_closed_is_opened_again() {
        let mut connection = Connection::new(&closing_server().await, soon());
        let mut measured = Measured::default();
        for _ in 0..3 {
            let answer = connection
                .timed(reqwest::Method::GET, "/healthz", None, &mut measured)
                .await;
            assert_eq!(answer.as_deref(), Some(&b"{}"[..]));
        }
        assert_eq!((measured.requests, measured.errors), (3, 0));
        assert_eq!(measured.latencies_us.len(), 3);
    }

    #[test]
    pub(crate) fn a_base_url_gives_the_address_host_and_path() {
        let soon = tokio::time::Instant::now();
        let parts = |base: &str| match Connection::new(base, soon).transport {
            Transport::Plain {
                address,
                host,
                prefix,
                ..
            } => Some((
                address,
                host.to_str().unwrap_or_default().to_string(),
                prefix,
            )),
            Transport::Tls { .. } => None,
        };
        let owned = |a: &str, h: &str, p: &str| Some((a.into(), h.into(), p.into()));
        assert_eq!(
            parts("http://127.0.0.1:8080"),
            owned("127.0.0.1:8080", "127.0.0.1:8080", "")
        );
        assert_eq!(
            parts("http://licenses.example.com"),
            owned("licenses.example.com:80", "licenses.example.com", "")
        );
        assert_eq!(
            parts("http://[::1]:9000/leasehold"),
            owned("[::1]:9000", "[::1]:9000", "/leasehold")
        );
        assert_eq!(parts("https://licenses.example.com"), None);
    }

    #[tokio::test]
    pub(crate) async fn a_server_that_is_gone_counts_errors() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut connection = Connection::new(&format!("http://127.0.0.1:{port}"), soon());
        let mut measured = Measured::default();
        for _ in 0..2 {
            let body = json!({"key": "k"});
            let answer = connection
                .timed(
                    reqwest::Method::POST,
                    "/v1/client/validate",
                    Some(&body),
                    &mut measured,
                )
                .await;
            assert!(answer.is_none());
        }
        assert_eq!((measured.requests, measured.errors), (2, 2));
    }

    #[tokio::test]
    pub(crate) async fn a_server_that_never_answers_times_out_as_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("its address");
        // Accepts, reads, and never answers.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let give_up = tokio::time::Instant::now() + Duration::from_millis(300);
        let mut connection = Connection::new(&format!("http://{address}"), give_up);
        let mut measured = Measured::default();
        let answer = connection
            .timed(reqwest::Method::GET, "/healthz", None, &mut measured)
            .await;
        assert!(answer.is_none());
        assert_eq!((measured.requests, measured.errors), (1, 1));
    }
}
