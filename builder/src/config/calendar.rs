//! A checker for systemd calendar expressions (`OnCalendar=`, systemd.time(7)).
//!
//! It accepts what `systemd-analyze calendar` accepts for the forms a backup
//! schedule uses, and rejects what systemd would reject, so a bad schedule is
//! caught by `mms-build check` instead of by a timer that never fires. The
//! test suite compares it with the real `systemd-analyze calendar`.

/// Checks one calendar expression; the error says what is wrong.
pub fn check(expr: &str) -> Result<(), String> {
    let e = expr.trim();
    if e.is_empty() {
        return Err("empty calendar expression".into());
    }
    const SHORT: &[&str] = &[
        "minutely",
        "hourly",
        "daily",
        "monthly",
        "weekly",
        "yearly",
        "annually",
        "quarterly",
        "semiannually",
    ];
    if SHORT.contains(&e) {
        return Ok(());
    }
    let mut words: Vec<&str> = e.split_whitespace().collect();
    // A trailing time zone: UTC or an Area/City name.
    if words.len() > 1 {
        let last = words[words.len() - 1];
        if last == "UTC" || (last.contains('/') && !last.contains(':') && !last.contains('-')) {
            if !last
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
            {
                return Err(format!("{last:?} is not a time zone"));
            }
            words.pop();
        }
    }
    let mut idx = 0;
    if idx < words.len()
        && words[idx]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
    {
        check_weekdays(words[idx])?;
        idx += 1;
    }
    let rest = &words[idx..];
    match rest {
        [] if idx > 0 => Ok(()),
        [one] if one.contains(':') => check_time(one),
        [one] => check_date(one),
        [date, time] => {
            check_date(date)?;
            check_time(time)
        }
        _ => Err(format!(
            "expected [WEEKDAY] [DATE] [TIME] [TIMEZONE], e.g. \"Sun *-*-* 04:00:00\"; found {e:?}"
        )),
    }
}

fn check_weekdays(s: &str) -> Result<(), String> {
    const DAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    const LONG: &[&str] = &[
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let day = |d: &str| {
        let l = d.to_ascii_lowercase();
        DAYS.contains(&l.as_str()) || LONG.contains(&l.as_str())
    };
    for part in s.split(',') {
        let ok = match part.split_once("..") {
            Some((a, b)) => day(a) && day(b),
            None => day(part),
        };
        if !ok {
            return Err(format!(
                "{part:?} is not a weekday (Mon, Tue, …, Sun, ranges like Mon..Fri)"
            ));
        }
    }
    Ok(())
}

fn check_date(s: &str) -> Result<(), String> {
    // D may carry `~` (days from the end of the month) instead of `-`.
    let (head, day, tilde) = match s.rsplit_once('~') {
        Some((h, d)) => (h, d, true),
        None => match s.rsplit_once('-') {
            Some((h, d)) => (h, d, false),
            None => return Err(format!("{s:?} is not a date (YYYY-MM-DD, *-*-*, MM-DD)")),
        },
    };
    let (year, month) = match head.split_once('-') {
        Some((y, m)) => (Some(y), m),
        None => (None, head),
    };
    if let Some(y) = year {
        check_component(y, 1970, 2199, "year")?;
    }
    check_component(month, 1, 12, "month")?;
    let _ = tilde;
    check_component(day, 1, 31, "day")
}

fn check_time(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        [h, m] => {
            check_component(h, 0, 23, "hour")?;
            check_component(m, 0, 59, "minute")
        }
        [h, m, sec] => {
            check_component(h, 0, 23, "hour")?;
            check_component(m, 0, 59, "minute")?;
            check_seconds(sec)
        }
        _ => Err(format!("{s:?} is not a time (HH:MM or HH:MM:SS)")),
    }
}

fn check_seconds(s: &str) -> Result<(), String> {
    for part in s.split(',') {
        let (int, frac) = match part.split_once('.') {
            Some((i, f))
                if !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()) && !i.contains('/') =>
            {
                (i, Some(f))
            }
            Some(_) if !part.contains('/') => return Err(format!("{part:?} is not a second")),
            _ => (part, None),
        };
        let _ = frac;
        check_component(int, 0, 59, "second")?;
    }
    Ok(())
}

/// One component: `*`, `N`, `A..B`, `A/R`, `*/R`, or a comma list of those.
fn check_component(s: &str, min: u32, max: u32, what: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("missing {what}"));
    }
    for item in s.split(',') {
        let (base, rep) = match item.split_once('/') {
            Some((b, r)) => (b, Some(r)),
            None => (item, None),
        };
        if let Some(r) = rep {
            let step = num(r, what)?;
            if step == 0 {
                return Err(format!("{what} repetition must be at least 1"));
            }
        }
        if base == "*" {
            continue;
        }
        let (a, b) = match base.split_once("..") {
            Some((a, b)) => (num(a, what)?, Some(num(b, what)?)),
            None => (num(base, what)?, None),
        };
        for v in std::iter::once(a).chain(b) {
            if v < min || v > max {
                return Err(format!("{what} {v} is out of range {min}..{max}"));
            }
        }
        if let Some(b) = b
            && b < a
        {
            return Err(format!("{what} range {a}..{b} runs backwards"));
        }
    }
    Ok(())
}

fn num(s: &str, what: &str) -> Result<u32, String> {
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) || s.len() > 4 {
        return Err(format!("{s:?} is not a valid {what}"));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not a valid {what}"))
}

/// Expressions the checker and systemd must agree on: `(expression, valid)`.
/// The test suite runs these through `systemd-analyze calendar` as well.
pub const CASES: &[(&str, bool)] = &[
    ("*-*-* 03:00:00", true),
    ("Sun *-*-* 04:00:00", true),
    ("daily", true),
    ("weekly", true),
    ("Mon..Fri 22:30", true),
    ("Sat,Sun 10:00", true),
    ("*-*-01 00:00:00", true),
    ("2026-01-01 00:00:00 UTC", true),
    ("*-*-* 03:00:00 Europe/Berlin", true),
    ("*-*-* *:0/15:00", true),
    ("*-02~03 12:00", true),
    ("03:00", true),
    ("Mon", true),
    ("*-*-* 25:00:00", false),
    ("*-*-* 03:60:00", false),
    ("*-13-01 00:00", false),
    ("Funday 03:00", false),
    ("every day", false),
    ("*-*-* 3", false),
    ("", false),
    ("*-*-* 03:00:00 03:00", false),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_recorded_cases() {
        for (expr, valid) in CASES {
            assert_eq!(check(expr).is_ok(), *valid, "{expr:?}: {:?}", check(expr));
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = check(&s);
        }
    }
}
