//! Local times, time zones and recurrence: how "tomorrow at 8, every weekday" becomes UTC.
//!
//! People speak in wall-clock time where they are. A reminder keeps what they asked for (the
//! IANA zone, the local time `YYYY-MM-DD HH:MM`, and an RFC 5545 rule for repeats) and the store
//! keeps the next occurrence in UTC, computed here. The reminder scheduler reuses
//! [`next_occurrence`] after each delivery, so both sides agree on every rule.
//!
//! Two decisions hold throughout:
//! - **DST**: a local time that does not exist (the hour skipped in spring) moves forward to
//!   the first valid time after the gap; a local time that happens twice (autumn) takes the
//!   earlier one. [`to_utc`] is the only place that decides.
//! - **Recurrence runs on the wall clock.** Rules are expanded on naive local times (the
//!   `rrule` crate, fed local times as if they were UTC) and each occurrence is then placed in
//!   the zone with [`to_utc`]. "Daily at 08:00" therefore stays at 08:00 across DST changes,
//!   and DST is decided in one place rather than by the rule engine. The one cost: a rule's
//!   `UNTIL` in UTC is compared against local times (hours off at most); we never write one.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc,
    Weekday,
};
use serde::{Deserialize, Serialize};

pub use chrono_tz::Tz;

/// How local times are written in tool arguments, rows and outputs.
pub const LOCAL_TIME_FORMAT: &str = "%Y-%m-%d %H:%M";

/// Occurrences a rule may expand before [`next_occurrence`] gives up (a daily rule covers
/// 270 years with this many).
const MAX_OCCURRENCES_SCANNED: usize = 100_000;

/// Why a time, zone or rule was refused, in words a person (or the model) can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhenError {
    /// Not an IANA time zone name.
    #[error(
        "{0:?} is not a time zone; use an IANA name such as Europe/Berlin or America/New_York"
    )]
    UnknownTimeZone(String),
    /// Not `YYYY-MM-DD HH:MM`.
    #[error("{0:?} is not a local time; use YYYY-MM-DD HH:MM with a 24-hour clock, e.g. 2026-03-05 08:30")]
    BadLocalTime(String),
    /// The time has already passed where the user is.
    #[error("{asked} in {zone} has already passed (it is {now} there now); pick a later time")]
    InThePast {
        /// The local time asked for.
        asked: String,
        /// The zone.
        zone: String,
        /// The local time now.
        now: String,
    },
    /// Not a recurrence rule (RFC 5545 `RRULE` value) we can expand.
    #[error("{0:?} is not a recurrence rule this assistant understands")]
    BadRule(String),
    /// The rule has no occurrence after the given time.
    #[error("that repeat rule has no occurrence after {0}")]
    NoOccurrence(String),
}

/// Parses an IANA time zone name (`Europe/Berlin`, `UTC`). Letter case is forgiven, since
/// people and models write `europe/berlin`.
///
/// # Errors
/// [`WhenError::UnknownTimeZone`] when no zone has that name.
pub fn parse_time_zone(name: &str) -> Result<Tz, WhenError> {
    let name = name.trim();
    Tz::from_str(name)
        .ok()
        .or_else(|| {
            chrono_tz::TZ_VARIANTS
                .iter()
                .copied()
                .find(|tz| tz.name().eq_ignore_ascii_case(name))
        })
        .ok_or_else(|| WhenError::UnknownTimeZone(name.to_owned()))
}

/// Parses a local time, `YYYY-MM-DD HH:MM`. A `T` instead of the space and trailing `:SS`
/// seconds are accepted (models write ISO 8601); seconds are dropped, since reminders are to
/// the minute.
///
/// # Errors
/// [`WhenError::BadLocalTime`] for anything else.
pub fn parse_local_time(text: &str) -> Result<NaiveDateTime, WhenError> {
    let trimmed = text.trim();
    [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(trimmed, format).ok())
    .and_then(|time| time.with_second(0))
    .ok_or_else(|| WhenError::BadLocalTime(trimmed.to_owned()))
}

/// Writes a local time as `YYYY-MM-DD HH:MM`.
pub fn format_local_time(time: NaiveDateTime) -> String {
    time.format(LOCAL_TIME_FORMAT).to_string()
}

/// The wall-clock time in `zone` at `time`.
pub fn to_local(zone: Tz, time: DateTime<Utc>) -> NaiveDateTime {
    time.with_timezone(&zone).naive_local()
}

/// A UTC time as people hear it: `2026-11-27 08:00 (Friday)`, in `zone`.
pub fn describe(zone: Tz, time: DateTime<Utc>) -> String {
    let local = to_local(zone, time);
    format!(
        "{} ({})",
        format_local_time(local),
        weekday_name(local.weekday())
    )
}

/// The English name of a weekday.
pub fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

/// Places a wall-clock time in `zone`: a time skipped by a DST change moves forward to the
/// first valid time after the gap; a time that happens twice takes the earlier.
pub fn to_utc(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(time) | LocalResult::Ambiguous(time, _) => time.with_timezone(&Utc),
        LocalResult::None => {
            // Gaps are whole minutes and at most a day long (Samoa skipped 2011-12-30), so
            // walking forward by minutes finds the end of the gap quickly.
            let mut probe = local;
            for _ in 0..=(2 * 24 * 60) {
                probe += TimeDelta::minutes(1);
                if let Some(time) = zone.from_local_datetime(&probe).earliest() {
                    return time.with_timezone(&Utc);
                }
            }
            // No zone has such a gap; reading the time as UTC is better than failing.
            Utc.from_utc_datetime(&local)
        }
    }
}

/// How often a reminder repeats, in the words the model picks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Recurrence {
    /// Once.
    None,
    /// Every day at the same local time.
    Daily,
    /// Monday to Friday.
    Weekdays,
    /// Every week on the same weekday.
    Weekly,
    /// Every month on the same day (the last day of shorter months for the 29th to 31st).
    Monthly,
    /// Every year on the same date (28 February in common years for 29 February).
    Yearly,
}

impl Recurrence {
    /// Every variant.
    pub const ALL: &'static [Recurrence] = &[
        Recurrence::None,
        Recurrence::Daily,
        Recurrence::Weekdays,
        Recurrence::Weekly,
        Recurrence::Monthly,
        Recurrence::Yearly,
    ];

    /// The spelling in tool arguments and outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Recurrence::None => "none",
            Recurrence::Daily => "daily",
            Recurrence::Weekdays => "weekdays",
            Recurrence::Weekly => "weekly",
            Recurrence::Monthly => "monthly",
            Recurrence::Yearly => "yearly",
        }
    }

    /// The RFC 5545 rule (an `RRULE` value) for repeats starting on `anchor`, `None` for
    /// [`Recurrence::None`].
    ///
    /// Weekly, monthly and yearly rules name their day explicitly rather than leaning on the
    /// start date, so a stored rule reads on its own. Days that some months lack use
    /// `BYSETPOS=-1` over a range of days: "the 31st" is the last day of shorter months
    /// instead of RFC 5545's default of skipping those months.
    pub fn rule(self, anchor: NaiveDate) -> Option<RecurrenceRule> {
        let text = match self {
            Recurrence::None => return None,
            Recurrence::Daily => "FREQ=DAILY".to_owned(),
            Recurrence::Weekdays => "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR".to_owned(),
            Recurrence::Weekly => format!("FREQ=WEEKLY;BYDAY={}", rrule_day(anchor.weekday())),
            Recurrence::Monthly => format!("FREQ=MONTHLY;{}", month_days(anchor.day())),
            Recurrence::Yearly => {
                format!(
                    "FREQ=YEARLY;BYMONTH={};{}",
                    anchor.month(),
                    month_days(anchor.day())
                )
            }
        };
        // The rules above are fixed shapes the rule parser accepts (a unit test covers each).
        RecurrenceRule::parse(&text).ok()
    }

    /// Which of these words `rule` is, for a reminder starting on `anchor`: the word whose
    /// [`Recurrence::rule`] for that date is exactly this rule. Rules written elsewhere (an
    /// operator's `FREQ=MONTHLY;BYDAY=1MO`) are `None`.
    pub fn of_rule(rule: &RecurrenceRule, anchor: NaiveDate) -> Option<Recurrence> {
        Recurrence::ALL.iter().copied().find(|word| {
            word.rule(anchor)
                .is_some_and(|own| own.as_str().eq_ignore_ascii_case(rule.as_str()))
        })
    }
}

impl fmt::Display for Recurrence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Recurrence {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Recurrence::ALL
            .iter()
            .copied()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            // "once" is what people (and the Go precedent's schema) say for "none".
            .or_else(|| {
                s.trim()
                    .eq_ignore_ascii_case("once")
                    .then_some(Recurrence::None)
            })
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a repeat; use one of: {}",
                    Recurrence::ALL
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

impl TryFrom<String> for Recurrence {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Recurrence> for &'static str {
    fn from(value: Recurrence) -> Self {
        value.as_str()
    }
}

fn rrule_day(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "MO",
        Weekday::Tue => "TU",
        Weekday::Wed => "WE",
        Weekday::Thu => "TH",
        Weekday::Fri => "FR",
        Weekday::Sat => "SA",
        Weekday::Sun => "SU",
    }
}

/// `BYMONTHDAY=d`, or for days some months lack, the last of 28..=d that the month has.
fn month_days(day: u32) -> String {
    if day <= 28 {
        format!("BYMONTHDAY={day}")
    } else {
        let days: Vec<String> = (28..=day).map(|d| d.to_string()).collect();
        format!("BYMONTHDAY={};BYSETPOS=-1", days.join(","))
    }
}

/// A parsed RFC 5545 recurrence rule (the value of an `RRULE` line, e.g.
/// `FREQ=WEEKLY;BYDAY=FR`), as stored in `reminders.recurrence`.
#[derive(Clone)]
pub struct RecurrenceRule {
    text: String,
    rule: rrule::RRule<rrule::Unvalidated>,
}

impl RecurrenceRule {
    /// Parses a rule; an `RRULE:` prefix is accepted.
    ///
    /// # Errors
    /// [`WhenError::BadRule`] when it is not a rule.
    pub fn parse(text: &str) -> Result<Self, WhenError> {
        let text = text.trim();
        let value = text.strip_prefix("RRULE:").unwrap_or(text);
        let rule = value
            .parse::<rrule::RRule<rrule::Unvalidated>>()
            .map_err(|_| WhenError::BadRule(text.to_owned()))?;
        Ok(Self {
            text: value.to_owned(),
            rule,
        })
    }

    /// The rule as stored.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for RecurrenceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RecurrenceRule").field(&self.text).finish()
    }
}

impl PartialEq for RecurrenceRule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Display for RecurrenceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The first occurrence strictly after `after` of a rule that started at `local_time` (the
/// rule's DTSTART, a wall-clock time) in `time_zone`; `None` when the rule has no more.
///
/// The start itself counts only if it matches the rule (RFC 5545 leaves that open; a
/// "weekdays" reminder asked for on a Saturday first rings on Monday).
pub fn next_occurrence(
    rule: &RecurrenceRule,
    time_zone: Tz,
    local_time: NaiveDateTime,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    // Expanded on the wall clock (see the module docs): UTC has no DST, so the rule engine
    // never sees a gap or a repeated hour.
    let start = rrule::Tz::UTC.from_utc_datetime(&local_time);
    let set = rule.rule.clone().build(start).ok()?.limit();
    set.into_iter()
        .take(MAX_OCCURRENCES_SCANNED)
        .map(|wall| to_utc(time_zone, wall.naive_utc()))
        .find(|time| *time > after)
}

/// When a new or moved reminder rings: its local time, its rule and its first occurrence.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The zone.
    pub time_zone: Tz,
    /// The wall-clock time asked for (the rule's start).
    pub local_time: NaiveDateTime,
    /// The repeat rule, `None` for once.
    pub rule: Option<RecurrenceRule>,
    /// The first occurrence after now.
    pub first: DateTime<Utc>,
}

impl Schedule {
    /// Plans a reminder at `local_time` in `time_zone`, repeating by `rule`, as of `now`.
    ///
    /// # Errors
    /// [`WhenError::InThePast`] when the time has passed where the user is;
    /// [`WhenError::NoOccurrence`] when the rule never fires after now.
    pub fn plan(
        time_zone: Tz,
        local_time: NaiveDateTime,
        rule: Option<RecurrenceRule>,
        now: DateTime<Utc>,
    ) -> Result<Self, WhenError> {
        let at = to_utc(time_zone, local_time);
        if at <= now {
            return Err(WhenError::InThePast {
                asked: format_local_time(local_time),
                zone: time_zone.name().to_owned(),
                now: describe(time_zone, now),
            });
        }
        let first = match &rule {
            None => at,
            Some(rule) => next_occurrence(rule, time_zone, local_time, now)
                .ok_or_else(|| WhenError::NoOccurrence(format_local_time(local_time)))?,
        };
        Ok(Self {
            time_zone,
            local_time,
            rule,
            first,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(text: &str) -> NaiveDateTime {
        parse_local_time(text).expect("valid local time")
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid RFC 3339")
            .with_timezone(&Utc)
    }

    fn zone(name: &str) -> Tz {
        parse_time_zone(name).expect("valid zone")
    }

    #[test]
    fn time_zones_are_iana_names_in_any_case() {
        assert_eq!(zone("Europe/Berlin"), Tz::Europe__Berlin);
        assert_eq!(zone(" europe/berlin "), Tz::Europe__Berlin);
        assert_eq!(zone("UTC"), Tz::UTC);
        assert_eq!(
            parse_time_zone("Mars/Olympus"),
            Err(WhenError::UnknownTimeZone("Mars/Olympus".into()))
        );
        assert!(parse_time_zone("CEST+2").is_err());
    }

    #[test]
    fn local_times_accept_the_space_or_t_and_drop_seconds() {
        let expected = NaiveDate::from_ymd_opt(2026, 3, 5)
            .and_then(|d| d.and_hms_opt(8, 30, 0))
            .expect("valid");
        for text in [
            "2026-03-05 08:30",
            "2026-03-05T08:30",
            "2026-03-05 08:30:59",
            " 2026-03-05T08:30:00 ",
        ] {
            assert_eq!(parse_local_time(text), Ok(expected), "{text}");
        }
        for bad in [
            "tomorrow at 8",
            "2026-02-30 08:00",
            "2026-03-05 25:00",
            "08:30",
            "",
        ] {
            assert!(
                matches!(parse_local_time(bad), Err(WhenError::BadLocalTime(_))),
                "{bad}"
            );
        }
        assert_eq!(format_local_time(expected), "2026-03-05 08:30");
    }

    #[test]
    fn local_times_become_utc_with_the_zones_offset() {
        assert_eq!(
            to_utc(zone("Europe/Berlin"), local("2026-01-15 09:00")),
            utc("2026-01-15T08:00:00Z")
        );
        assert_eq!(
            to_utc(zone("Europe/Berlin"), local("2026-07-15 09:00")),
            utc("2026-07-15T07:00:00Z")
        );
        assert_eq!(
            describe(zone("America/New_York"), utc("2026-11-27T13:00:00Z")),
            "2026-11-27 08:00 (Friday)"
        );
    }

    #[test]
    fn a_time_skipped_in_spring_moves_to_the_end_of_the_gap() {
        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST.
        assert_eq!(
            to_utc(zone("Europe/Berlin"), local("2026-03-29 02:30")),
            utc("2026-03-29T01:00:00Z"),
            "03:00 CEST, the first valid time"
        );
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        let moved = to_utc(zone("America/New_York"), local("2026-03-08 02:15"));
        assert_eq!(moved, utc("2026-03-08T07:00:00Z"));
        assert_eq!(
            to_local(zone("America/New_York"), moved),
            local("2026-03-08 03:00")
        );
    }

    #[test]
    fn a_time_repeated_in_autumn_takes_the_earlier() {
        // Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        assert_eq!(
            to_utc(zone("Europe/Berlin"), local("2026-10-25 02:30")),
            utc("2026-10-25T00:30:00Z"),
            "02:30 CEST, not 02:30 CET"
        );
    }

    #[test]
    fn every_recurrence_word_writes_a_rule_that_parses_and_reads_back() {
        for anchor in [
            NaiveDate::from_ymd_opt(2026, 11, 27),
            NaiveDate::from_ymd_opt(2028, 2, 29),
            NaiveDate::from_ymd_opt(2026, 1, 31),
        ]
        .into_iter()
        .flatten()
        {
            for word in Recurrence::ALL {
                match word.rule(anchor) {
                    None => assert_eq!(*word, Recurrence::None),
                    Some(rule) => {
                        assert_eq!(Recurrence::of_rule(&rule, anchor), Some(*word), "{rule}")
                    }
                }
            }
        }
        let friday = NaiveDate::from_ymd_opt(2026, 11, 27).expect("valid");
        assert_eq!(
            Recurrence::Weekly.rule(friday).map(|r| r.to_string()),
            Some("FREQ=WEEKLY;BYDAY=FR".into())
        );
        let custom = RecurrenceRule::parse("FREQ=WEEKLY;INTERVAL=2;BYDAY=FR").expect("valid");
        assert_eq!(
            Recurrence::of_rule(&custom, friday),
            None,
            "not one of the words"
        );
        let other_day = RecurrenceRule::parse("FREQ=WEEKLY;BYDAY=MO").expect("valid");
        assert_eq!(
            Recurrence::of_rule(&other_day, friday),
            None,
            "weekly, but not on the reminder's own day"
        );
        assert!(RecurrenceRule::parse("EVERY=TUESDAY").is_err());
        assert_eq!("once".parse::<Recurrence>(), Ok(Recurrence::None));
        assert!("fortnightly".parse::<Recurrence>().is_err());
    }

    #[test]
    fn daily_stays_at_the_same_local_time_across_the_dst_change() {
        let berlin = zone("Europe/Berlin");
        let rule = Recurrence::Daily
            .rule(local("2026-03-27 08:00").date())
            .expect("rule");
        let start = local("2026-03-27 08:00");
        let mut after = utc("2026-03-27T00:00:00Z");
        let mut seen = Vec::new();
        for _ in 0..4 {
            let next = next_occurrence(&rule, berlin, start, after).expect("next");
            seen.push(next);
            after = next;
        }
        assert_eq!(
            seen,
            [
                utc("2026-03-27T07:00:00Z"),
                utc("2026-03-28T07:00:00Z"),
                utc("2026-03-29T06:00:00Z"), // CEST from here on
                utc("2026-03-30T06:00:00Z"),
            ]
        );
        assert!(seen
            .iter()
            .all(|t| to_local(berlin, *t).time() == start.time()));
    }

    #[test]
    fn a_daily_time_inside_the_gap_rings_at_the_end_of_the_gap_that_day_only() {
        let new_york = zone("America/New_York");
        let start = local("2026-03-07 02:30");
        let rule = Recurrence::Daily.rule(start.date()).expect("rule");
        let after_first = utc("2026-03-07T08:00:00Z");
        let on_dst_day = next_occurrence(&rule, new_york, start, after_first).expect("next");
        assert_eq!(to_local(new_york, on_dst_day), local("2026-03-08 03:00"));
        let day_after = next_occurrence(&rule, new_york, start, on_dst_day).expect("next");
        assert_eq!(to_local(new_york, day_after), local("2026-03-09 02:30"));
    }

    #[test]
    fn weekdays_skip_the_weekend_and_a_saturday_start_first_rings_on_monday() {
        let utc_zone = zone("UTC");
        let saturday = local("2026-11-28 09:00");
        let rule = Recurrence::Weekdays.rule(saturday.date()).expect("rule");
        let first = next_occurrence(&rule, utc_zone, saturday, utc("2026-11-27T00:00:00Z"));
        assert_eq!(first, Some(utc("2026-11-30T09:00:00Z")));
        let friday = next_occurrence(&rule, utc_zone, saturday, utc("2026-12-03T09:00:00Z"));
        assert_eq!(friday, Some(utc("2026-12-04T09:00:00Z")));
        let monday = next_occurrence(&rule, utc_zone, saturday, utc("2026-12-04T09:00:00Z"));
        assert_eq!(monday, Some(utc("2026-12-07T09:00:00Z")));
    }

    #[test]
    fn monthly_on_the_31st_falls_on_the_last_day_of_shorter_months() {
        let utc_zone = zone("UTC");
        let start = local("2026-01-31 18:00");
        let rule = Recurrence::Monthly.rule(start.date()).expect("rule");
        let mut after = utc("2026-01-31T18:00:00Z");
        let mut days = Vec::new();
        for _ in 0..3 {
            let next = next_occurrence(&rule, utc_zone, start, after).expect("next");
            days.push(format_local_time(to_local(utc_zone, next)));
            after = next;
        }
        assert_eq!(
            days,
            ["2026-02-28 18:00", "2026-03-31 18:00", "2026-04-30 18:00"]
        );
    }

    #[test]
    fn yearly_on_the_29th_of_february_rings_on_the_28th_in_common_years() {
        let utc_zone = zone("UTC");
        let start = local("2028-02-29 10:00");
        let rule = Recurrence::Yearly.rule(start.date()).expect("rule");
        let next = next_occurrence(&rule, utc_zone, start, utc("2028-02-29T10:00:00Z"));
        assert_eq!(next, Some(utc("2029-02-28T10:00:00Z")));
        let weekly = RecurrenceRule::parse("RRULE:FREQ=WEEKLY;BYDAY=FR").expect("stored form");
        assert_eq!(weekly.as_str(), "FREQ=WEEKLY;BYDAY=FR");
    }

    #[test]
    fn a_rule_with_a_count_runs_out() {
        let rule = RecurrenceRule::parse("FREQ=DAILY;COUNT=2").expect("valid");
        let start = local("2026-05-01 07:00");
        let zone = zone("UTC");
        assert_eq!(
            next_occurrence(&rule, zone, start, utc("2026-05-01T07:00:00Z")),
            Some(utc("2026-05-02T07:00:00Z"))
        );
        assert_eq!(
            next_occurrence(&rule, zone, start, utc("2026-05-02T07:00:00Z")),
            None
        );
    }

    #[test]
    fn planning_refuses_the_past_and_finds_the_first_occurrence() {
        let berlin = zone("Europe/Berlin");
        let now = utc("2026-11-26T18:00:00Z"); // 19:00 in Berlin
        let past = Schedule::plan(berlin, local("2026-11-26 18:59"), None, now);
        assert_eq!(
            past,
            Err(WhenError::InThePast {
                asked: "2026-11-26 18:59".into(),
                zone: "Europe/Berlin".into(),
                now: "2026-11-26 19:00 (Thursday)".into(),
            })
        );
        let once = Schedule::plan(berlin, local("2026-11-26 19:30"), None, now).expect("plan");
        assert_eq!(once.first, utc("2026-11-26T18:30:00Z"));
        let saturday = local("2026-11-28 09:00");
        let rule = Recurrence::Weekdays.rule(saturday.date());
        let weekdays = Schedule::plan(berlin, saturday, rule, now).expect("plan");
        assert_eq!(
            describe(berlin, weekdays.first),
            "2026-11-30 09:00 (Monday)"
        );
    }
}
