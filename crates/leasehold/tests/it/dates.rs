//! The guard against tests pinned to the calendar: no test may hold a calendar date within
//! two years of today, unless the line says why with a `fixed date:` comment (on the line
//! or on the comment line just above it).
//!
//! A date near today in a test is almost always one the product compares with today (a
//! license "active" until a day next year, a reminder "upcoming" next month): such a test
//! passes the day it is written and fails once that day has passed. Tests take their dates from
//! `harness::in_days` instead, or pass "today" to the code they test. Dates far from today
//! (a parser's input, a year 9999) and the ones marked `fixed date:` (a signature's test
//! vector, a rule fed its own `today`) are left alone.
//!
//! Scanned: every `.rs` file under `crates/*/tests/`, and each `crates/*/src/` file from its
//! first `#[cfg(test)]` on. Dates are written `YYYY-MM-DD` or `YYYY, M, D` (as passed to
//! `NaiveDate::from_ymd_opt` or a helper like it).

use chrono::NaiveDate;
use std::path::{Path, PathBuf};

const MARK: &str = "fixed date:";
const WINDOW_DAYS: i64 = 2 * 366;

#[test]
fn no_test_holds_a_calendar_date_near_today() {
    let today = chrono::Utc::now().date_naive();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    let mut found = Vec::new();
    for file in rust_files(&root.join("crates")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let in_tests = file.components().any(|c| c.as_os_str() == "tests");
        let from = if in_tests {
            0
        } else {
            match text.lines().position(|l| l.contains("#[cfg(test)]")) {
                Some(line) => line,
                None => continue,
            }
        };
        for (n, line) in unmarked_dates_near(&text, from, today) {
            let path = file.strip_prefix(&root).unwrap_or(&file);
            found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
        }
    }
    assert!(
        found.is_empty(),
        "tests hold calendar dates within two years of today ({today}); take them from \
         harness::in_days (or pass `today` in), or mark the line `// {MARK} <why>`:\n{}",
        found.join("\n")
    );
}

/// The guard's own test: it finds a date near today in both forms, and leaves marked lines,
/// far dates and impossible dates alone. Its lines are made from today, so that it holds
/// no date itself.
#[test]
fn the_guard_finds_near_dates_and_leaves_marked_and_far_ones() {
    let today = chrono::Utc::now().date_naive();
    let near = today + chrono::Days::new(100);
    let far = today + chrono::Days::new(5 * 366);
    let ymd = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
    let tuple = |d: NaiveDate| d.format("%Y, %-m, %-d").to_string();
    let text = [
        format!(r#"json!({{"expires_on": "{}"}})"#, ymd(near)),
        format!(
            "let day = NaiveDate::from_ymd_opt({}).unwrap();",
            tuple(near)
        ),
        format!(
            r#"let v = "{}T04:00:00Z"; // {MARK} a test vector"#,
            ymd(near)
        ),
        format!("// {MARK} the rule is given its own today"),
        format!("let today = day({});", tuple(today)),
        format!(r#"let far = "{}";"#, ymd(far)),
        format!(r#"let invalid = "{}-02-30";"#, today.format("%Y")),
        "let version = \"2025\";".to_string(),
        format!("let late = \"{}\";", ymd(near)),
    ]
    .join("\n");
    let found: Vec<usize> = unmarked_dates_near(&text, 0, today)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(found, [0, 1, 8]);
    assert!(
        unmarked_dates_near(&text, 2, today).len() == 1,
        "from line 2 on"
    );
}

/// The lines (index, text) from line `from` on that hold a date within the window around
/// `today` and carry no mark.
fn unmarked_dates_near(text: &str, from: usize, today: NaiveDate) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let marked = |n: usize| {
        lines[n].contains(MARK)
            || (n > 0 && lines[n - 1].trim_start().starts_with("//") && lines[n - 1].contains(MARK))
    };
    (from..lines.len())
        .filter(|&n| !marked(n))
        .filter(|&n| {
            dates_in(lines[n])
                .iter()
                .any(|d| (*d - today).num_days().abs() <= WINDOW_DAYS)
        })
        .map(|n| (n, lines[n]))
        .collect()
}

/// The valid calendar dates a line holds, as `YYYY-MM-DD` or `YYYY, M, D`.
fn dates_in(line: &str) -> Vec<NaiveDate> {
    let bytes = line.as_bytes();
    let digits_at = |i: usize, max: usize| {
        let n = bytes[i.min(bytes.len())..]
            .iter()
            .take(max)
            .take_while(|b| b.is_ascii_digit())
            .count();
        (n > 0 && !bytes.get(i + n).is_some_and(u8::is_ascii_digit)).then(|| {
            let value: u32 = line[i..i + n].parse().unwrap_or(0);
            (value, i + n)
        })
    };
    let skip_spaces = |mut i: usize| {
        while bytes.get(i) == Some(&b' ') {
            i += 1;
        }
        i
    };
    let mut dates = Vec::new();
    for start in 0..bytes.len() {
        if start > 0 && bytes[start - 1].is_ascii_digit() {
            continue;
        }
        let Some((year, end)) = digits_at(start, 4).filter(|(_, end)| end - start == 4) else {
            continue;
        };
        let date = if bytes.get(end) == Some(&b'-') {
            // YYYY-MM-DD
            digits_at(end + 1, 2)
                .filter(|(_, e)| bytes.get(*e) == Some(&b'-'))
                .and_then(|(month, e)| digits_at(e + 1, 2).map(|(day, _)| (month, day)))
        } else {
            // YYYY, M, D
            let comma = skip_spaces(end);
            (bytes.get(comma) == Some(&b','))
                .then(|| digits_at(skip_spaces(comma + 1), 2))
                .flatten()
                .and_then(|(month, e)| {
                    let comma = skip_spaces(e);
                    (bytes.get(comma) == Some(&b','))
                        .then(|| digits_at(skip_spaces(comma + 1), 2))
                        .flatten()
                        .map(|(day, _)| (month, day))
                })
        };
        if let Some((month, day)) = date {
            dates.extend(NaiveDate::from_ymd_opt(year as i32, month, day));
        }
    }
    dates
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
