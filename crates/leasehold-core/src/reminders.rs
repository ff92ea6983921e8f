//! Reminders derived from a license's dates (DESIGN §1): one per lead day before
//! expiry and before maintenance expiry, never in the past, none for a revoked license.

use crate::{LicenseStatus, ReminderKind};
use chrono::{Days, NaiveDate};

/// The reminder lead days a new workspace gets.
pub const DEFAULT_LEAD_DAYS: [u32; 3] = [30, 7, 1];

/// The reminders a license should have pending as of `today`, earliest first.
pub fn due_reminders(
    status: LicenseStatus,
    expires_on: Option<NaiveDate>,
    maintenance_expires_on: Option<NaiveDate>,
    lead_days: &[u32],
    today: NaiveDate,
) -> Vec<(ReminderKind, NaiveDate)> {
    if status == LicenseStatus::Revoked {
        return Vec::new();
    }
    let mut due = Vec::new();
    for (kind, date) in [
        (ReminderKind::Expiry, expires_on),
        (ReminderKind::MaintenanceExpiry, maintenance_expires_on),
    ] {
        let Some(date) = date else { continue };
        for &lead in lead_days {
            if let Some(day) = date.checked_sub_days(Days::new(u64::from(lead))) {
                if day >= today && !due.contains(&(kind, day)) {
                    due.push((kind, day));
                }
            }
        }
    }
    due.sort_by_key(|&(kind, day)| (day, kind.as_str()));
    due
}

/// Checks a workspace's lead days: 1 to 10 distinct values, each within 0..=3650.
pub fn check_lead_days(lead_days: &[u32]) -> Result<(), &'static str> {
    if lead_days.is_empty() || lead_days.len() > 10 {
        return Err("must list between 1 and 10 lead days");
    }
    if lead_days.iter().any(|&d| d > 3650) {
        return Err("lead days must be between 0 and 3650");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The rules are given their own `today`: the dates below never meet the real one, and
    // each is marked for the guard against dates pinned to the calendar (tests/it/dates.rs).
    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn each_lead_day_before_each_date_gets_a_reminder() {
        let today = day(2026, 1, 1); // fixed date: the rule is given its own today
        let due = due_reminders(
            LicenseStatus::Active,
            Some(day(2026, 6, 30)), // fixed date: the rule is given its own today
            Some(day(2026, 3, 31)), // fixed date: the rule is given its own today
            &DEFAULT_LEAD_DAYS,
            today,
        );
        assert_eq!(due.len(), 6);
        assert_eq!(due[0], (ReminderKind::MaintenanceExpiry, day(2026, 3, 1))); // fixed date: the rule is given its own today
        assert_eq!(due[5], (ReminderKind::Expiry, day(2026, 6, 29))); // fixed date: the rule is given its own today
    }

    #[test]
    fn past_days_perpetual_and_revoked_licenses_get_none() {
        let today = day(2026, 6, 25); // fixed date: the rule is given its own today
        let due = due_reminders(
            LicenseStatus::Active,
            Some(day(2026, 6, 30)), // fixed date: the rule is given its own today
            None,
            &DEFAULT_LEAD_DAYS,
            today,
        );
        assert_eq!(due, vec![(ReminderKind::Expiry, day(2026, 6, 29))]); // fixed date: the rule is given its own today
        assert!(
            due_reminders(LicenseStatus::Active, None, None, &DEFAULT_LEAD_DAYS, today).is_empty()
        );
        assert!(due_reminders(
            LicenseStatus::Revoked,
            Some(day(2027, 1, 1)), // fixed date: the rule is given its own today
            None,
            &DEFAULT_LEAD_DAYS,
            today
        )
        .is_empty());
    }
}
