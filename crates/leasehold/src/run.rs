//! `leasehold run`: wraps any program in a seat. It takes a floating seat (or uses the
//! machine's dedicated activation), runs the program, heartbeats while it runs, checks
//! in when it exits or is interrupted, and exits with the program's code.

/// A line to the user on stderr. Unlike `eprintln!`, a closed stderr (the parent stopped
/// reading) is ignored rather than a panic: `run` must still check its seat in.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use leasehold_client::{Client, Error, Holder, LeaseGuard};
use leasehold_core::SeatModel;
use std::time::{Duration, Instant};

/// Exit codes of `leasehold run` itself (the program's own code passes through).
pub mod exit {
    /// All seats are in use (and `--wait` ran out).
    pub const NO_SEATS: u8 = 75;
    /// The key is unknown, or the license is suspended, revoked, expired, or refused here.
    pub const LICENSE_INVALID: u8 = 77;
    /// The license server could not be reached.
    pub const UNREACHABLE: u8 = 69;
    /// The program could not be started.
    pub const CANNOT_START: u8 = 126;
}

/// How `run`, `borrow` and `return` reach the license server, and who holds the seat.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// The license server, e.g. https://licenses.example.com
    #[arg(long, env = "LEASEHOLD_SERVER")]
    pub server: String,
    /// The license key.
    #[arg(long, env = "LEASEHOLD_KEY", hide_env_values = true)]
    pub key: String,
    /// The workspace's public key (base64): every answer is verified against it.
    #[arg(long, env = "LEASEHOLD_PUBLIC_KEY")]
    pub public_key: Option<String>,
    /// A PEM file of certificate authorities to trust besides the system's (a server
    /// whose certificate a private PKI issued).
    #[arg(long, env = "LEASEHOLD_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// How this computer is named in the console (default: its host name).
    #[arg(long)]
    pub identifier: Option<String>,
    /// The per-application salt of the machine fingerprint.
    #[arg(long, default_value = "leasehold-run")]
    pub app_salt: String,
    /// Where `leasehold borrow` keeps the borrowed seat's license file (default:
    /// `$XDG_DATA_HOME/leasehold/borrow.json`, or `~/.local/share/leasehold/borrow.json`).
    #[arg(long)]
    pub borrow_file: Option<std::path::PathBuf>,
}

impl ServerArgs {
    /// The SDK client, verifying every answer when a public key is given.
    pub fn client(&self) -> Result<Client, String> {
        let mut client = Client::new(&self.server, &self.key).map_err(|e| e.to_string())?;
        if let Some(ca_file) = &self.ca_file {
            client = client.with_ca_file(ca_file).map_err(|e| e.to_string())?;
        }
        match &self.public_key {
            Some(pk) => client.with_public_key(pk).map_err(|e| e.to_string()),
            None => Ok(client),
        }
    }

    /// This machine and OS user.
    pub fn holder(&self) -> Holder {
        let identifier = self.identifier.clone().or_else(host_name);
        Holder::this_machine(&self.app_salt, identifier.as_deref())
    }

    pub fn borrow_file(&self) -> std::path::PathBuf {
        if let Some(path) = &self.borrow_file {
            return path.clone();
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/share"))
            })
            .unwrap_or_else(|| std::path::PathBuf::from("."));
        data.join("leasehold").join("borrow.json")
    }
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub to: ServerArgs,
    /// Wait up to this many seconds while all seats are in use: in the license's queue
    /// (a floating seat goes to the first in line), or by asking again (a dedicated one).
    #[arg(long, default_value_t = 0)]
    wait: u64,
    /// The program and its arguments.
    #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

enum Seat {
    Lease(Box<LeaseGuard>),
    Activation,
}

fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

fn refusal(error: &Error) -> u8 {
    match error {
        Error::Unreachable(_) => exit::UNREACHABLE,
        Error::Api { error, .. } if error.code == "NO_SEATS" => exit::NO_SEATS,
        _ => exit::LICENSE_INVALID,
    }
}

pub async fn run(args: RunArgs) -> u8 {
    // Listened for before anything else: a signal that came while the seat was being
    // taken used to kill `run` by default, leaving the seat to expire instead of checked in.
    let mut signals = Signals::listen();
    let client = match args.to.client() {
        Ok(client) => client,
        Err(e) => return fail(&e, exit::LICENSE_INVALID),
    };
    let holder = args.to.holder();
    // A seat this machine borrowed (`leasehold borrow`) is its own, online or offline.
    if let Some(until) = crate::borrow::borrowed_until(&args.to, &holder) {
        note!("leasehold: using the seat borrowed until {until}");
        return run_program(&args.command, &mut signals).await;
    }
    // Stopped before a seat is taken: nothing is held, and the program never starts.
    let answer = tokio::select! {
        answer = client.validate(Some(&holder.fingerprint), Some(&holder.os_user)) => answer,
        stop = signals.next() => return stop.exit_code(),
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => return fail(&e.to_string(), refusal(&e)),
    };
    let Some(license) = answer
        .license
        .filter(|_| answer.valid || answer.code == "NOT_ACTIVATED")
    else {
        return fail(
            &format!("the license is not valid here ({})", answer.code),
            exit::LICENSE_INVALID,
        );
    };
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    let mut told_waiting = false;
    let seat = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let take = async {
            match license.seat_model {
                // In the queue while --wait lasts: each request waits a few seconds for
                // the holder's turn and keeps its place.
                SeatModel::Concurrent if args.wait > 0 => client
                    .lease_queued(
                        &holder,
                        u32::try_from(left.as_secs().max(1)).unwrap_or(60),
                        false,
                    )
                    .await
                    .map(|guard| Seat::Lease(Box::new(guard))),
                SeatModel::Concurrent => client
                    .lease_with(&holder, false)
                    .await
                    .map(|guard| Seat::Lease(Box::new(guard))),
                SeatModel::Dedicated => client.activate(&holder).await.map(|_| Seat::Activation),
            }
        };
        tokio::pin!(take);
        // A signal while the seat is being taken: the answer is still awaited (the server
        // may have counted the seat), a seat taken is checked back in, and the program
        // never starts. A second signal stops at once (a seat taken then expires).
        let mut stopped = None;
        let taken = loop {
            tokio::select! {
                biased;
                stop = signals.next() => match stopped {
                    None => {
                        note!("leasehold: stopping once the seat request is answered");
                        stopped = Some(stop);
                    }
                    Some(_) => return stop.exit_code(),
                },
                taken = &mut take => break taken,
            }
        };
        if let Some(stop) = stopped {
            match taken {
                Ok(Seat::Lease(guard)) => check_in(*guard).await,
                // Stopped while waiting in the queue: give the place up.
                Err(error) if error.queue_position().is_some() => {
                    let _ = client.leave_queue(&holder).await;
                }
                _ => {}
            }
            return stop.exit_code();
        }
        match taken {
            Ok(seat) => break seat,
            Err(error) if matches!(error.code(), Some("NO_SEATS") | Some("RELEASE_COOLDOWN")) => {
                let retry = error.retry_after_s().unwrap_or(5);
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    if error.queue_position().is_some() {
                        // Nobody will ask for this place again: give it up now.
                        let _ = client.leave_queue(&holder).await;
                    }
                    let total = match &error {
                        Error::Api { error, .. } => error
                            .details
                            .as_ref()
                            .and_then(|d| d.get("seats_total"))
                            .and_then(|v| v.as_i64())
                            .unwrap_or(license.seats_total),
                        _ => license.seats_total,
                    };
                    if error.code() == Some("NO_SEATS") {
                        note!("leasehold: all {total} seats are in use; retry in {retry} s");
                    } else {
                        note!("leasehold: {error}");
                    }
                    return exit::NO_SEATS;
                }
                if !told_waiting {
                    match error.queue_position() {
                        Some(position) => note!(
                            "leasehold: all seats are in use; waiting up to {} s in the queue (number {position})",
                            args.wait
                        ),
                        None => note!(
                            "leasehold: all seats are in use; waiting up to {} s for one",
                            args.wait
                        ),
                    }
                    told_waiting = true;
                }
                if error.queue_position().is_some() {
                    // The server waited for the holder's turn already: ask again at once.
                    continue;
                }
                // A checkin can free a seat before the hinted expiry: poll at least every 2 s.
                let poll = Duration::from_secs(retry)
                    .min(Duration::from_secs(2))
                    .min(left);
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    // Interrupted while waiting: no seat is held.
                    stop = signals.next() => return stop.exit_code(),
                }
            }
            Err(error) => return fail(&error.to_string(), refusal(&error)),
        }
    };
    let code = run_program(&args.command, &mut signals).await;
    if let Seat::Lease(guard) = seat {
        check_in(*guard).await;
    }
    code
}

async fn check_in(guard: LeaseGuard) {
    if let Err(error) = guard.release().await {
        note!("leasehold: could not check the seat in ({error}); it frees itself when the lease expires");
    }
}

fn fail(message: &str, code: u8) -> u8 {
    note!("leasehold: {message}");
    code
}

/// Runs the program to its end, passing SIGINT/SIGTERM on to it; answers its exit code.
async fn run_program(command: &[String], signals: &mut Signals) -> u8 {
    let Some((program, rest)) = command.split_first() else {
        return exit::CANNOT_START;
    };
    let mut child = match tokio::process::Command::new(program).args(rest).spawn() {
        Ok(child) => child,
        Err(e) => return fail(&format!("cannot start {program}: {e}"), exit::CANNOT_START),
    };
    let pid = child.id();
    loop {
        tokio::select! {
            status = child.wait() => return exit_code(status),
            stop = signals.next() => stop.pass_on(pid),
        }
    }
}

/// A signal asking `run` (and its program) to stop.
#[derive(Clone, Copy)]
enum Stop {
    Interrupt,
    Terminate,
}

impl Stop {
    /// 128 + the signal's number, as a shell reports a program it ended.
    fn exit_code(self) -> u8 {
        match self {
            Stop::Interrupt => 130,
            Stop::Terminate => 143,
        }
    }

    /// Sends the same signal to the program.
    fn pass_on(self, pid: Option<u32>) {
        #[cfg(unix)]
        if let Some(pid) = pid {
            use nix::sys::signal::{kill, Signal};
            let signal = match self {
                Stop::Interrupt => Signal::SIGINT,
                Stop::Terminate => Signal::SIGTERM,
            };
            let _ = kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
        #[cfg(not(unix))]
        let _ = pid;
    }
}

/// SIGINT and SIGTERM, listened for from the start of `run`, so none is lost or kills it.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(interrupt), Ok(terminate)) => Some((interrupt, terminate)),
                _ => None,
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next signal; never, where signals cannot be listened for.
    async fn next(&mut self) -> Stop {
        #[cfg(unix)]
        if let Some((interrupt, terminate)) = &mut self.streams {
            return tokio::select! {
                _ = interrupt.recv() => Stop::Interrupt,
                _ = terminate.recv() => Stop::Terminate,
            };
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_ok() {
            return Stop::Interrupt;
        }
        std::future::pending().await
    }
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> u8 {
    match status {
        Ok(status) => {
            if let Some(code) = status.code() {
                return code as u8;
            }
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                if let Some(signal) = status.signal() {
                    return 128u8.wrapping_add(signal as u8);
                }
            }
            1
        }
        Err(_) => 1,
    }
}
