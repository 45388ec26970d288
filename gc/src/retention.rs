//! Retention: which datasets a policy keeps, and why.
//!
//! The rules follow restic's `forget`, which users know: within each group
//! (by default, the same sources on the same host), going from the newest
//! dataset back, `--keep-daily N` keeps the newest dataset of each of the
//! last N days that have one, and likewise for hours, ISO weeks, months and
//! years; `--keep-last N` keeps the N newest; `--keep-within SPAN` keeps
//! everything within SPAN of the group's newest; `--keep-tag T` keeps
//! datasets tagged T. A dataset kept by any rule is kept, and every rule
//! that kept it is named. Combined, daily + weekly + monthly give the
//! brief's grandfather-father-son rule. Calendar buckets use the local
//! time zone, as people mean "daily".

use cairn_store::DatasetRecord;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};
use serde::Serialize;

/// How datasets are grouped before the rules are applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GroupBy {
    /// The same sources on the same host.
    #[default]
    Source,
    /// The same host.
    Host,
    /// The same set of tags.
    Tags,
    /// All datasets together.
    None,
}

/// A retention policy. Counts of 0 mean the rule is not used.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Keep the N newest.
    pub last: usize,
    /// Keep the newest of each of the last N hours that have one.
    pub hourly: usize,
    /// Days.
    pub daily: usize,
    /// ISO weeks.
    pub weekly: usize,
    /// Months.
    pub monthly: usize,
    /// Years.
    pub yearly: usize,
    /// Keep everything this close to the group's newest dataset.
    pub within: Option<Span>,
    /// Keep datasets carrying any of these tags.
    pub tags: Vec<String>,
    /// How to group.
    pub group_by: GroupBy,
    /// `--expired`: keep every dataset that has not expired at this time
    /// (ns since the epoch); drop the expired ones no other rule keeps.
    pub expired_at: Option<i64>,
    /// With `expired_at`: always keep this many newest per group.
    pub reserve: usize,
}

/// What the policy says about one dataset.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// The dataset.
    pub dataset: DatasetRecord,
    /// The group it was judged in.
    pub group: String,
    /// Whether it stays.
    pub keep: bool,
    /// The rules that kept it (`daily 2026-11-23`, `last 2`, ...); empty when removed.
    pub reasons: Vec<String>,
}

/// One calendar rule: how many buckets it keeps and how a time maps to one.
struct Bucketed {
    name: &'static str,
    left: usize,
    last: Option<String>,
    bucket: fn(&Zoned) -> String,
}

impl Policy {
    /// True when no rule keeps anything (forgetting with it would drop
    /// every dataset, which callers refuse).
    pub fn is_empty(&self) -> bool {
        self.last + self.hourly + self.daily + self.weekly + self.monthly + self.yearly == 0
            && self.within.is_none()
            && self.tags.is_empty()
            && self.expired_at.is_none()
    }

    /// Decides every dataset (returned in the order given) in time zone `tz`.
    pub fn apply(&self, datasets: &[DatasetRecord], tz: &TimeZone) -> Vec<Decision> {
        let mut decisions: Vec<Decision> = datasets
            .iter()
            .map(|d| Decision { dataset: d.clone(), group: self.group_of(d), keep: false, reasons: Vec::new() })
            .collect();
        let mut groups: Vec<String> = decisions.iter().map(|d| d.group.clone()).collect();
        groups.sort();
        groups.dedup();
        for group in groups {
            // Newest first; ties broken by id so the order is total.
            let mut members: Vec<usize> = (0..decisions.len()).filter(|&i| decisions[i].group == group).collect();
            members.sort_by_key(|&i| std::cmp::Reverse((decisions[i].dataset.time_ns, decisions[i].dataset.id)));
            self.judge(&mut decisions, &members, tz);
        }
        decisions
    }

    fn judge(&self, decisions: &mut [Decision], newest_first: &[usize], tz: &TimeZone) {
        let zoned_at = |time_ns: i64| {
            Timestamp::from_nanosecond(i128::from(time_ns)).unwrap_or(Timestamp::UNIX_EPOCH).to_zoned(tz.clone())
        };
        let times: Vec<Zoned> = newest_first.iter().map(|&i| zoned_at(decisions[i].dataset.time_ns)).collect();
        let mut rules = [
            Bucketed {
                name: "hourly",
                left: self.hourly,
                last: None,
                bucket: |z| z.strftime("%Y-%m-%d %H:00").to_string(),
            },
            Bucketed { name: "daily", left: self.daily, last: None, bucket: |z| z.strftime("%Y-%m-%d").to_string() },
            Bucketed {
                name: "weekly",
                left: self.weekly,
                last: None,
                bucket: |z| {
                    let week = z.date().iso_week_date();
                    format!("{}-W{:02}", week.year(), week.week())
                },
            },
            Bucketed { name: "monthly", left: self.monthly, last: None, bucket: |z| z.strftime("%Y-%m").to_string() },
            Bucketed { name: "yearly", left: self.yearly, last: None, bucket: |z| z.strftime("%Y").to_string() },
        ];
        // A span reaching back past the earliest date there is keeps the
        // whole group; it must not keep nothing (which dropped every
        // dataset a `--keep-within 19998y` meant to keep).
        let cutoff = match (self.within, times.first()) {
            (Some(span), Some(newest)) => Some(newest.checked_sub(span).map_or(Timestamp::MIN, |z| z.timestamp())),
            _ => None,
        };
        for (rank, (&i, time)) in newest_first.iter().zip(&times).enumerate() {
            let mut reasons = Vec::new();
            if rank < self.last {
                reasons.push(format!("last {}", rank + 1));
            }
            for rule in rules.iter_mut().filter(|r| r.left > 0) {
                let bucket = (rule.bucket)(time);
                if rule.last.as_ref() != Some(&bucket) {
                    reasons.push(format!("{} {bucket}", rule.name));
                    rule.left -= 1;
                    rule.last = Some(bucket);
                }
            }
            if cutoff.is_some_and(|cutoff| time.timestamp() >= cutoff) {
                reasons.push("within".to_string());
            }
            if let Some(tag) = decisions[i].dataset.tags.iter().find(|t| self.tags.contains(t)) {
                reasons.push(format!("tag {tag}"));
            }
            if let Some(now) = self.expired_at {
                match decisions[i].dataset.expires_ns {
                    Some(expires) if expires <= now => {}
                    Some(_) => reasons.push("not expired".to_string()),
                    None => reasons.push("no expiry".to_string()),
                }
                if rank < self.reserve {
                    reasons.push(format!("reserve {}", rank + 1));
                }
            }
            decisions[i].keep = !reasons.is_empty();
            decisions[i].reasons = reasons;
        }
    }

    fn group_of(&self, d: &DatasetRecord) -> String {
        match self.group_by {
            GroupBy::Source => format!("{}:{}", d.host, d.source()),
            GroupBy::Host => d.host.clone(),
            GroupBy::Tags => {
                let mut tags = d.tags.clone();
                tags.sort();
                tags.join(",")
            }
            GroupBy::None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::{BlobId, DatasetId, Tid};

    const HOUR: i64 = 3_600_000_000_000;
    const DAY: i64 = 24 * HOUR;

    fn dataset(id: u64, time_ns: i64, source: &str, tags: &[&str]) -> DatasetRecord {
        DatasetRecord {
            host: "h".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..DatasetRecord::bare(DatasetId(id), BlobId::of(b"root"), time_ns, source, Tid(id))
        }
    }

    /// One dataset a day at 03:00 UTC for `days` days, starting on a Monday.
    fn daily(days: u64) -> Vec<DatasetRecord> {
        let monday: i64 = 1_704_067_200_000_000_000; // 2024-01-01T00:00Z, a Monday
        (0..days).map(|d| dataset(d + 1, monday + d as i64 * DAY + 3 * HOUR, "/src", &[])).collect()
    }

    fn kept(decisions: &[Decision]) -> Vec<u64> {
        decisions.iter().filter(|d| d.keep).map(|d| d.dataset.id.0).collect()
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_of_the_last_days() {
        let mut datasets = daily(10);
        // A second backup on the last day: only the newer of the two counts.
        datasets.push(dataset(11, datasets[9].time_ns + HOUR, "/src", &[]));
        let policy = Policy { daily: 3, ..Policy::default() };
        assert_eq!(kept(&policy.apply(&datasets, &TimeZone::UTC)), vec![8, 9, 11]);
    }

    #[test]
    fn daily_weekly_monthly_is_grandfather_father_son() {
        // 120 days from Monday 2024-01-01: 7 dailies, then the newest of each
        // earlier ISO week, then of each earlier month.
        let datasets = daily(120);
        let policy = Policy { daily: 7, weekly: 4, monthly: 3, ..Policy::default() };
        let decisions = policy.apply(&datasets, &TimeZone::UTC);
        let ids = kept(&decisions);
        // Days 114..=120 (2024-04-23..29) are the dailies.
        assert!((114..=120).all(|d| ids.contains(&d)), "{ids:?}");
        // Weekly: the newest of the last 4 ISO weeks: 2024-04-29 is a Monday
        // (week 18, id 120), then Sundays 04-28, 04-21, 04-14 (ids 119, 112, 105).
        for id in [112, 105] {
            assert!(ids.contains(&id), "weekly {id} missing from {ids:?}");
        }
        // Monthly: the newest of April (120), March (91), February (60).
        for id in [91, 60] {
            assert!(ids.contains(&id), "monthly {id} missing from {ids:?}");
        }
        assert_eq!(ids.len(), 7 + 2 + 2, "{ids:?}");
        let april = decisions.iter().find(|d| d.dataset.id.0 == 120).unwrap();
        assert_eq!(april.reasons, vec!["daily 2024-04-29", "weekly 2024-W18", "monthly 2024-04"]);
    }

    #[test]
    fn last_within_and_tags_keep_and_say_why() {
        let mut datasets = daily(30);
        datasets[3].tags = vec!["release".into()];
        let policy =
            Policy { last: 2, within: Some(Span::new().days(5)), tags: vec!["release".into()], ..Policy::default() };
        let decisions = policy.apply(&datasets, &TimeZone::UTC);
        assert_eq!(kept(&decisions), vec![4, 25, 26, 27, 28, 29, 30]);
        assert_eq!(decisions[29].reasons, vec!["last 1", "within"]);
        assert_eq!(decisions[3].reasons, vec!["tag release"]);
        assert!(decisions[0].reasons.is_empty() && !decisions[0].keep);
    }

    #[test]
    fn keep_within_longer_than_the_calendar_keeps_everything() {
        let datasets: Vec<_> =
            (0..5).map(|d| dataset(d + 1, 1_700_000_000_000_000_000 + d as i64 * DAY, "/src", &[])).collect();
        let policy = Policy { within: Some(Span::new().years(19_998)), ..Policy::default() };
        let decisions = policy.apply(&datasets, &TimeZone::UTC);
        assert!(decisions.iter().all(|d| d.keep && d.reasons == ["within"]), "{decisions:#?}");
        // Datasets from before 1970 (time_ns < 0) and the far end of what i64 holds.
        let old = vec![dataset(1, i64::MIN, "/src", &[]), dataset(2, i64::MAX, "/src", &[])];
        let decisions = policy.apply(&old, &TimeZone::UTC);
        assert!(decisions.iter().all(|d| d.keep), "{decisions:#?}");
    }

    #[test]
    fn expired_datasets_go_but_the_reserve_stays() {
        let mut datasets = daily(6);
        let now = datasets[5].time_ns + HOUR;
        for d in &mut datasets {
            d.expires_ns = Some(d.time_ns + 2 * DAY);
        }
        datasets[0].expires_ns = None;
        // Expired by now: ids 2..=4 (taken more than two days ago); 5 and 6 are not.
        let policy = Policy { expired_at: Some(now), reserve: 1, ..Policy::default() };
        let decisions = policy.apply(&datasets, &TimeZone::UTC);
        assert_eq!(kept(&decisions), vec![1, 5, 6]);
        assert_eq!(decisions[0].reasons, vec!["no expiry"]);
        // A reserve larger than what has not expired keeps expired ones too.
        let policy = Policy { expired_at: Some(now), reserve: 3, ..Policy::default() };
        assert_eq!(kept(&policy.apply(&datasets, &TimeZone::UTC)), vec![1, 4, 5, 6]);
        assert!(!policy.is_empty());
    }

    #[test]
    fn groups_are_judged_apart() {
        let mut datasets = daily(4);
        let others: Vec<_> = (0..4).map(|d| dataset(10 + d, datasets[d as usize].time_ns + 1, "/other", &[])).collect();
        datasets.extend(others);
        let policy = Policy { last: 1, ..Policy::default() };
        assert_eq!(kept(&policy.apply(&datasets, &TimeZone::UTC)), vec![4, 13]);
        let together = Policy { last: 1, group_by: GroupBy::None, ..Policy::default() };
        assert_eq!(kept(&together.apply(&datasets, &TimeZone::UTC)), vec![13]);
        assert!(Policy::default().is_empty() && !policy.is_empty());
    }
}
