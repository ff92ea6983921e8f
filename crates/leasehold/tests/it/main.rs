//! Integration tests: the real server on a random port, over HTTP, on SQLite and on
//! PostgreSQL (each test in its own fresh database).
#![allow(clippy::unwrap_used)]

mod harness;
mod idle;

mod auth;
mod backup;
mod bench;
mod binding;
mod borrow;
mod cli;
mod client;
mod concurrency;
mod console;
mod dates;
mod egress;
mod heartbeats;
mod input;
mod keygen;
mod limits;
mod members;
mod metrics;
mod nodes;
mod notify;
mod openapi;
mod paging;
mod queue;
mod reminders;
mod scale;
mod sdk;
mod sinks;
mod sweep;
mod tls;
mod tracking;
mod usage;
mod wal;
