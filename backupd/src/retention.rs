//! Retention: restic's `forget --keep-daily/weekly/monthly` rule, in UTC, per service.
//!
//! Pure: takes archive times (and a tie-breaking name), returns which to keep. Walk newest
//! first; for each rule independently keep the newest archive of each of the last N distinct
//! buckets that hold an archive (UTC day, ISO-8601 week, UTC month). Gaps stretch the window
//! (counts are of buckets with archives, counted from the newest archive, not from "now").
//! An archive kept by any rule is kept; the newest archive is always kept, even with all
//! counts zero.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Utc};

use crate::config::Retention;

/// One archive as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Item {
    /// UTC start time.
    pub time: DateTime<Utc>,
    /// File name (breaks ties between equal times deterministically).
    pub name: String,
}

/// Why an archive is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// Newest archive of the service.
    Newest,
    /// Newest of one of the last `daily` days.
    Daily,
    /// Newest of one of the last `weekly` ISO weeks.
    Weekly,
    /// Newest of one of the last `monthly` months.
    Monthly,
}

/// The decision for a set of archives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Kept names, newest first.
    pub keep: Vec<String>,
    /// Names to delete, newest first.
    pub delete: Vec<String>,
}

/// A bucket key function (day, ISO week or month).
type KeyFn = fn(&DateTime<Utc>) -> (i32, u32, u32);

fn day(t: &DateTime<Utc>) -> (i32, u32, u32) {
    (t.year(), t.month(), t.day())
}
fn week(t: &DateTime<Utc>) -> (i32, u32, u32) {
    let w = t.iso_week();
    (w.year(), w.week(), 0)
}
fn month(t: &DateTime<Utc>) -> (i32, u32, u32) {
    (t.year(), t.month(), 0)
}

/// Applies the rule. Duplicate items are treated as one.
pub fn plan(items: &[Item], policy: Retention) -> Plan {
    let mut sorted: Vec<&Item> = items.iter().collect::<BTreeSet<_>>().into_iter().collect();
    sorted.reverse(); // newest first; equal times: larger name first
    let mut keep = vec![false; sorted.len()];
    if let Some(k) = keep.first_mut() {
        *k = true;
    }
    let rules: [(u32, KeyFn); 3] = [
        (policy.daily, day),
        (policy.weekly, week),
        (policy.monthly, month),
    ];
    for (count, key) in rules {
        let mut left = count;
        let mut last = None;
        for (i, item) in sorted.iter().enumerate() {
            if left == 0 {
                break;
            }
            let k = key(&item.time);
            if last != Some(k) {
                keep[i] = true;
                last = Some(k);
                left -= 1;
            }
        }
    }
    let mut out = Plan::default();
    for (i, item) in sorted.iter().enumerate() {
        if keep[i] {
            out.keep.push(item.name.clone());
        } else {
            out.delete.push(item.name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn item(y: i32, m: u32, d: u32, h: u32) -> Item {
        let time = Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap();
        Item {
            name: crate::naming::archive_name("s", time, true),
            time,
        }
    }

    const P: Retention = Retention {
        daily: 7,
        weekly: 4,
        monthly: 6,
    };

    #[test]
    fn restic_table_300_dailies() {
        // One backup per day at 02:00 for 300 days, newest Fri 2026-03-27 (backup.md §1.4).
        let newest = Utc.with_ymd_and_hms(2026, 3, 27, 2, 0, 0).unwrap();
        let items: Vec<Item> = (0..300)
            .map(|i| {
                let time = newest - chrono::Duration::days(i);
                Item {
                    name: crate::naming::archive_name("s", time, true),
                    time,
                }
            })
            .collect();
        let p = plan(&items, P);
        let days: Vec<String> = p.keep.iter().map(|n| n[2..12].to_string()).collect();
        assert_eq!(
            days,
            [
                "2026-03-27",
                "2026-03-26",
                "2026-03-25",
                "2026-03-24",
                "2026-03-23",
                "2026-03-22",
                "2026-03-21",
                "2026-03-15",
                "2026-03-08",
                "2026-02-28",
                "2026-01-31",
                "2025-12-31",
                "2025-11-30",
                "2025-10-31"
            ]
        );
    }

    #[test]
    fn iso_week_year_edge() {
        // 2021-01-03 (Sunday) belongs to ISO week 2020-W53, same as 2020-12-31.
        let items = vec![
            item(2020, 12, 31, 1),
            item(2021, 1, 3, 1),
            item(2021, 1, 4, 1),
        ];
        let p = plan(
            &items,
            Retention {
                daily: 0,
                weekly: 5,
                monthly: 0,
            },
        );
        assert_eq!(p.keep.len(), 2);
        assert!(p.delete[0].contains("2020-12-31"));
    }

    #[test]
    fn zero_policy_keeps_newest_and_empty_is_empty() {
        let items = vec![item(2025, 1, 1, 1), item(2025, 1, 2, 1)];
        let p = plan(
            &items,
            Retention {
                daily: 0,
                weekly: 0,
                monthly: 0,
            },
        );
        assert_eq!(p.keep.len(), 1);
        assert!(p.keep[0].contains("2025-01-02"));
        assert_eq!(plan(&[], P), Plan::default());
    }

    fn arb_items() -> impl Strategy<Value = Vec<Item>> {
        // Around year boundaries and within seconds of each other.
        let base = prop_oneof![
            Just(
                Utc.with_ymd_and_hms(2020, 12, 20, 0, 0, 0)
                    .unwrap()
                    .timestamp()
            ),
            Just(
                Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
                    .unwrap()
                    .timestamp()
            ),
            Just(
                Utc.with_ymd_and_hms(2024, 10, 27, 0, 0, 0)
                    .unwrap()
                    .timestamp()
            ),
        ];
        (
            base,
            prop::collection::vec((0i64..400 * 86400, 0u8..3), 0..60),
        )
            .prop_map(|(b, v)| {
                v.into_iter()
                    .map(|(off, tag)| {
                        let time = DateTime::from_timestamp(b + off, 0).unwrap();
                        Item {
                            name: format!("{}-{tag}", crate::naming::format_stamp(time)),
                            time,
                        }
                    })
                    .collect()
            })
    }

    fn arb_policy() -> impl Strategy<Value = Retention> {
        (0u32..10, 0u32..6, 0u32..8).prop_map(|(daily, weekly, monthly)| Retention {
            daily,
            weekly,
            monthly,
        })
    }

    proptest! {
        #[test]
        fn properties(items in arb_items(), pol in arb_policy(), seed in any::<u64>()) {
            let p = plan(&items, pol);
            let names: BTreeSet<&String> = items.iter().map(|i| &i.name).collect();
            // kept ⊆ all, and keep/delete partition the distinct inputs
            prop_assert!(p.keep.iter().all(|n| names.contains(n)));
            prop_assert_eq!(p.keep.len() + p.delete.len(), items.iter().collect::<BTreeSet<_>>().len());
            // newest always kept
            if let Some(newest) = items.iter().max() {
                prop_assert!(p.keep.contains(&newest.name));
            }
            // bounded
            prop_assert!(p.keep.len() as u32 <= (pol.daily + pol.weekly + pol.monthly).max(1));
            // order independent
            let mut shuffled = items.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(plan(&shuffled, pol), p.clone());
            // idempotent
            let kept: Vec<Item> = items.iter().filter(|i| p.keep.contains(&i.name)).cloned().collect();
            let again = plan(&kept, pol);
            prop_assert_eq!(again.keep, p.keep.clone());
            prop_assert!(again.delete.is_empty());
            // ISO week keys use ISO years
            for i in &items {
                let w = i.time.iso_week();
                let d = i.time.date_naive();
                prop_assert_eq!(chrono::NaiveDate::from_isoywd_opt(w.year(), w.week(), d.weekday()), Some(d));
            }
        }

        #[test]
        fn each_rule_keeps_newest_of_last_n_buckets(items in arb_items(), n in 1u32..10, which in 0usize..3) {
            let (pol, key): (Retention, KeyFn) = match which {
                0 => (Retention { daily: n, weekly: 0, monthly: 0 }, day),
                1 => (Retention { daily: 0, weekly: n, monthly: 0 }, week),
                _ => (Retention { daily: 0, weekly: 0, monthly: n }, month),
            };
            let p = plan(&items, pol);
            let mut buckets: Vec<(i32, u32, u32)> = items.iter().map(|i| key(&i.time)).collect::<BTreeSet<_>>().into_iter().collect();
            buckets.reverse();
            buckets.truncate(n as usize);
            let expect: BTreeSet<String> = buckets
                .iter()
                .map(|b| items.iter().filter(|i| key(&i.time) == *b).max().unwrap().name.clone())
                .collect();
            prop_assert_eq!(p.keep.iter().cloned().collect::<BTreeSet<_>>(), expect);
        }
    }
}
