//! The store's operations in SQL both backends run, compiled once for each.
//!
//! `sqlite/mod.rs` and `postgres/mod.rs` each include this module (`#[path]`) after
//! naming what differs between them: `This` (the store type), `Db` (its sqlx driver),
//! `BACKEND`, and the row-lock clauses `row_lock!()` and `skip_locked!()` (empty on
//! SQLite, whose one writer serializes writes). Each query is therefore checked against
//! that driver's types, and the store's own hooks (`begin_write`, `commit`, `reader`,
//! `writer`) come from its module; each store implements `Seats` itself (its seat
//! engine), and the seat writes of `Tracking` (`assign`, `reclaim`, `edit_license`,
//! `remove_license`) are its own too. Keep the SQL portable:
//! `$n` placeholders, `ON CONFLICT`, `RETURNING`; texts shared with the seat engines
//! live in `sql.rs`.
//!
//! Generic code over `sqlx::Database` was tried instead: every bind, decode and row
//! type needs its own higher-ranked bound (`for<'q> i64: Encode<'q, DB>`, `usize:
//! ColumnIndex<DB::Row>`, …), repeated on every impl block, because Rust does not imply
//! such bounds from a trait.

mod directory;
mod helpers;
mod notifications;
mod seats;
mod tracking;
mod usage;

use super::{Db, This, BACKEND};
use crate::records::*;
use crate::sql::{is_unique_violation, json, TOP_CURSOR};
use crate::{Backend, Directory, Result, StoreError, Tracking};
use async_trait::async_trait;
use leasehold_core::*;

type Tx = sqlx::Transaction<'static, Db>;
