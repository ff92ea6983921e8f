//! The operations the admin API and the console share: each checks the caller's
//! permission and the input, then asks the store. API handlers and console pages are
//! thin adapters over these (JSON in and out; forms and HTML), and never call each other.

pub(crate) mod members;
pub(crate) mod notifications;
pub(crate) mod tracking;

use crate::error::ApiError;

/// A required text field: trimmed, not empty, at most `max` characters, no NUL (which
/// PostgreSQL refuses in text).
pub(crate) fn required_text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if value.contains('\0') {
        return Err(ApiError::invalid(field, "must not contain NUL characters"));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(value.to_string())
}

/// An optional text field: trimmed; empty means absent.
pub(crate) fn optional_text(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => required_text(field, v, max).map(Some),
    }
}
