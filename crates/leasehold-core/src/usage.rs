//! Usage analytics (DESIGN §8), without I/O: a bucket's figures from the seats the ledger
//! holds for its window, hours and days in UTC, the p95 of a period, and the renewal
//! advice that sets what was used against what was bought.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// The start (ms, UTC) of the hour `ms` is in.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// The start (ms, UTC) of the day `ms` is in.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

/// Who holds a seat, as usage counts holders (and refused holders): a machine and its OS
/// user for a floating seat, a machine for a dedicated one, else the person or device an
/// admin assigned it to (or the seat itself).
pub fn holder_key(fingerprint: Option<&str>, os_user: Option<&str>, other: &str) -> String {
    match (fingerprint, os_user) {
        (Some(fingerprint), Some(os_user)) => format!("{fingerprint}\t{os_user}"),
        (Some(fingerprint), None) => fingerprint.to_string(),
        (None, _) => other.to_string(),
    }
}

/// A seat as the ledger holds it: who held it, from when, and until when (`None`: held).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Who holds it: a machine and OS user, a machine, or a person or device assigned.
    pub holder: String,
    pub from: i64,
    pub until: Option<i64>,
}

/// What the seats held in one bucket add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// The most seats held at once.
    pub peak_in_use: i64,
    /// Seats held, summed over time (ms): `avg_in_use` is this over the bucket's length.
    pub seat_ms: i64,
    /// Distinct holders that held a seat.
    pub holders: i64,
}

/// The figures of the window `[start, end)` from the seats that overlap it (others are
/// ignored). A seat freed at the very moment another is taken does not count twice.
pub fn figures(start: i64, end: i64, seats: &[Held]) -> Figures {
    let mut changes = Vec::with_capacity(seats.len() * 2);
    let mut holders = HashSet::new();
    let mut seat_ms = 0i64;
    for seat in seats {
        let from = seat.from.max(start);
        let until = seat.until.unwrap_or(i64::MAX).min(end);
        if from >= until {
            continue;
        }
        holders.insert(seat.holder.as_str());
        seat_ms = seat_ms.saturating_add(until - from);
        changes.push((from, 1i64));
        changes.push((until, -1i64));
    }
    // Ends before starts at the same instant.
    changes.sort_unstable();
    let (mut level, mut peak) = (0i64, 0i64);
    for (_, change) in changes {
        level += change;
        peak = peak.max(level);
    }
    Figures {
        peak_in_use: peak,
        seat_ms,
        holders: holders.len() as i64,
    }
}

/// The hours `[from, to)` (both hour starts) of the bucket windows a rollup computes.
pub fn hours(from: i64, to: i64) -> impl Iterator<Item = i64> {
    let first = hour_of(from);
    (0..)
        .map(move |n| first + n * HOUR_MS)
        .take_while(move |hour| *hour < to)
}

/// The 95th percentile (nearest rank) of hourly peaks; 0 for none.
pub fn p95(mut peaks: Vec<i64>) -> i64 {
    if peaks.is_empty() {
        return 0;
    }
    peaks.sort_unstable();
    let rank = (peaks.len() * 95).div_ceil(100).max(1);
    peaks[rank - 1]
}

/// What to do at renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AdviceAction {
    Reduce,
    Increase,
    Keep,
}

/// The renewal advice: the action, the seats to hold after it, and why, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Advice {
    pub action: AdviceAction,
    pub seats: i64,
    pub reason: String,
}

/// One license of the usage summary (DESIGN §8): its use over a period against what was
/// bought, with the renewal advice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageSummaryItem {
    pub license_id: String,
    pub application_id: String,
    pub licensed_to: String,
    pub seat_model: crate::SeatModel,
    pub seats_total: i64,
    pub peak_in_use: i64,
    /// The 95th percentile of the hourly peaks.
    pub p95_in_use: i64,
    pub avg_in_use: f64,
    pub denials: i64,
    pub denied_holders: i64,
    /// `peak_in_use` / `seats_total`.
    pub utilisation: f64,
    pub cost: Option<crate::Money>,
    pub expires_on: Option<chrono::NaiveDate>,
    pub advice: Advice,
    /// What the advice is worth, in minor units of `cost`'s currency: the seats it would
    /// add or drop at the license's price per seat (the summary's order).
    pub at_stake_minor: i64,
}

/// A license's use over a period, as the advice reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub days: i64,
    pub seats_total: i64,
    pub peak_in_use: i64,
    pub p95_in_use: i64,
    pub denials: i64,
    /// Distinct holders refused over the period.
    pub denied_holders: i64,
    /// The most distinct holders refused in one hour.
    pub most_refused_at_once: i64,
    /// What the license costs (minor units, currency), and whether that is a year's price.
    pub cost: Option<(i64, String, bool)>,
}

/// Use at or below this share of what was bought (after the margin) is "well below".
const WELL_BELOW_PERCENT: i64 = 80;
/// The margin kept above the period's use: a tenth of it, at least one seat.
fn margin(seats: i64) -> i64 {
    (seats.max(0) + 9) / 10
}

/// The advice for a period (DESIGN §8): `increase` when anyone was refused, by the most
/// refused at once; otherwise `reduce` when use stayed well below what was bought, to the
/// p95 plus a margin and never below the peak; otherwise `keep`.
pub fn advise(p: &Period) -> Advice {
    let over = |n: i64| {
        if n == 1 {
            "1 day".to_string()
        } else {
            format!("{n} days")
        }
    };
    if p.denials > 0 {
        let more = p.most_refused_at_once.max(1);
        let people = match p.denied_holders {
            1 => "1 person was".to_string(),
            n => format!("{n} people were"),
        };
        let refusals = match p.denials {
            1 => "1 refusal".to_string(),
            n => format!("{n} refusals"),
        };
        return Advice {
            action: AdviceAction::Increase,
            seats: p.seats_total + more,
            reason: format!(
                "{people} refused a seat over {} ({refusals}, at most {} at once); {} more \
                 seat{} would have served them",
                over(p.days),
                p.most_refused_at_once.max(1),
                more,
                if more == 1 { "" } else { "s" }
            ),
        };
    }
    let target = (p.p95_in_use + margin(p.p95_in_use).max(1))
        .max(p.peak_in_use)
        .max(1);
    let well_below = target * 100 <= p.seats_total * WELL_BELOW_PERCENT;
    if well_below && target < p.seats_total {
        let unused = p.seats_total - p.peak_in_use;
        let money = p
            .cost
            .as_ref()
            .filter(|(amount, _, _)| *amount > 0 && p.seats_total > 0)
            .map(|(amount, currency, yearly)| {
                let share = amount.saturating_mul(unused) / p.seats_total;
                format!(
                    " ≈ {} {currency}{}",
                    whole_units(share),
                    if *yearly { " a year" } else { "" }
                )
            })
            .unwrap_or_default();
        return Advice {
            action: AdviceAction::Reduce,
            seats: target,
            reason: format!(
                "peak {} of {} seats over {}; {unused} seats{money} unused",
                p.peak_in_use,
                p.seats_total,
                over(p.days)
            ),
        };
    }
    Advice {
        action: AdviceAction::Keep,
        seats: p.seats_total,
        reason: format!(
            "peak {} of {} seats over {}, and nobody was refused",
            p.peak_in_use,
            p.seats_total,
            over(p.days)
        ),
    }
}

/// Minor units as whole units with thousands separators, rounded: 1_400_049 → "14,000".
fn whole_units(minor: i64) -> String {
    let units = (minor + 50) / 100;
    let digits = units.abs().to_string();
    let mut out = String::new();
    for (n, digit) in digits.chars().enumerate() {
        if n > 0 && (digits.len() - n).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if units < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 20_000 * DAY_MS;

    fn held(holder: &str, from_min: i64, until_min: Option<i64>) -> Held {
        Held {
            holder: holder.into(),
            from: DAY + from_min * 60_000,
            until: until_min.map(|m| DAY + m * 60_000),
        }
    }

    #[test]
    fn an_hour_counts_its_peak_its_seat_time_and_its_holders() {
        let seats = [
            held("a", -30, Some(30)), // from before the hour, half of it
            held("b", 10, Some(20)),  // ten minutes
            held("b", 40, None),      // the same holder again, still held
            held("c", 30, Some(45)),  // taken as a's ends: not three at once
            held("d", 90, None),      // after the hour
        ];
        let f = figures(DAY, DAY + HOUR_MS, &seats);
        assert_eq!(f.peak_in_use, 2);
        assert_eq!(f.seat_ms, (30 + 10 + 20 + 15) * 60_000);
        assert_eq!(f.holders, 3);
        assert_eq!(figures(DAY, DAY + HOUR_MS, &[]), Figures::default());
    }

    #[test]
    fn hours_and_days_are_utc() {
        assert_eq!(hour_of(DAY + HOUR_MS + 5), DAY + HOUR_MS);
        assert_eq!(day_of(DAY + 23 * HOUR_MS), DAY);
        assert_eq!(hour_of(-1), -HOUR_MS);
        let listed: Vec<i64> = hours(DAY + 5, DAY + 3 * HOUR_MS).collect();
        assert_eq!(listed, [DAY, DAY + HOUR_MS, DAY + 2 * HOUR_MS]);
    }

    #[test]
    fn p95_is_the_nearest_rank() {
        assert_eq!(p95(vec![]), 0);
        assert_eq!(p95(vec![7]), 7);
        let mut peaks: Vec<i64> = (1..=100).collect();
        assert_eq!(p95(peaks.clone()), 95);
        peaks.push(1000);
        assert_eq!(p95(peaks), 96);
    }

    fn period(peak: i64, p95: i64, total: i64) -> Period {
        Period {
            days: 90,
            seats_total: total,
            peak_in_use: peak,
            p95_in_use: p95,
            denials: 0,
            denied_holders: 0,
            most_refused_at_once: 0,
            cost: Some((2_000_000, "USD".into(), true)),
        }
    }

    #[test]
    fn refusals_ask_for_more_seats() {
        let mut p = period(40, 40, 40);
        p.denials = 12;
        p.denied_holders = 5;
        p.most_refused_at_once = 3;
        let advice = advise(&p);
        assert_eq!((advice.action, advice.seats), (AdviceAction::Increase, 43));
        assert_eq!(
            advice.reason,
            "5 people were refused a seat over 90 days (12 refusals, at most 3 at once); 3 more \
             seats would have served them"
        );
    }

    #[test]
    fn one_refusal_reads_in_the_singular() {
        let mut p = period(2, 2, 2);
        p.denials = 1;
        p.denied_holders = 1;
        p.most_refused_at_once = 1;
        assert_eq!(
            advise(&p).reason,
            "1 person was refused a seat over 90 days (1 refusal, at most 1 at once); 1 more \
             seat would have served them"
        );
    }

    #[test]
    fn use_well_below_what_was_bought_reduces_to_the_p95_plus_a_margin() {
        let advice = advise(&period(12, 10, 40));
        assert_eq!((advice.action, advice.seats), (AdviceAction::Reduce, 12));
        assert_eq!(
            advice.reason,
            "peak 12 of 40 seats over 90 days; 28 seats ≈ 14,000 USD a year unused"
        );
        // Never below the peak; the margin is a tenth of use, at least one seat.
        assert_eq!(advise(&period(30, 25, 100)).seats, 30);
        assert_eq!(advise(&period(20, 20, 100)).seats, 22);
        assert_eq!(advise(&period(0, 0, 10)).seats, 1);
    }

    #[test]
    fn use_near_what_was_bought_keeps_it() {
        // At the edge: 80% of 10 after the margin is still "well below".
        assert_eq!(advise(&period(7, 7, 10)).action, AdviceAction::Reduce);
        let keep = advise(&period(8, 8, 10));
        assert_eq!((keep.action, keep.seats), (AdviceAction::Keep, 10));
        assert_eq!(
            keep.reason,
            "peak 8 of 10 seats over 90 days, and nobody was refused"
        );
        // Without a cost, the reason says no money.
        let mut p = period(1, 1, 10);
        p.cost = None;
        p.days = 1;
        assert_eq!(
            advise(&p).reason,
            "peak 1 of 10 seats over 1 day; 9 seats unused"
        );
    }

    #[test]
    fn money_reads_in_whole_units() {
        assert_eq!(whole_units(1_400_000), "14,000");
        assert_eq!(whole_units(99), "1");
        assert_eq!(whole_units(12_345_678_900), "123,456,789");
        assert_eq!(whole_units(0), "0");
    }
}
