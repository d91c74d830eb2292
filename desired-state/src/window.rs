//! Maintenance windows in time: whether a Unix time is inside one of
//! `rollout.maintenance_windows`, and when the next one opens. Pure (the
//! caller passes the time), so the coordinator and the agents agree.

use crate::model::{MaintenanceWindow, Weekday};

const DAY: u64 = 86_400;
const WEEK: u64 = 7 * DAY;

/// Where `now` stands relative to the maintenance windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowState {
    /// Restarts may start now.
    pub open: bool,
    /// When open: when the open stretch ends (Unix seconds). `None` while
    /// closed, and when it never closes (no windows at all, or windows that
    /// together cover the whole week).
    pub closes_at: Option<u64>,
    /// When closed: when the next window opens (Unix seconds). `None` while
    /// open, or when no window ever opens.
    pub next_open: Option<u64>,
}

/// The day of the week of a Unix day number (1970-01-01 was a Thursday).
fn weekday_of(day: u64) -> Weekday {
    Weekday::ALL[((day + 3) % 7) as usize]
}

/// Whether `now_unix` is inside one of `windows`, and when that changes.
/// No windows means restarts are allowed at any time. Overlapping or
/// back-to-back windows count as one stretch.
pub fn window_state(windows: &[MaintenanceWindow], now_unix: u64) -> WindowState {
    if windows.is_empty() {
        return WindowState {
            open: true,
            closes_at: None,
            next_open: None,
        };
    }
    // Every opening from two weeks before to two weeks after today: a window
    // lasts at most a week, so this sees every stretch touching the week
    // around `now`.
    let today = now_unix / DAY;
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for day in today.saturating_sub(14)..=today + 14 {
        for window in windows {
            if !window.days.is_empty() && !window.days.contains(&weekday_of(day)) {
                continue;
            }
            let length = window.duration.as_secs().min(WEEK);
            if length == 0 {
                continue;
            }
            let opens = day * DAY + u64::from(window.start.minutes()) * 60;
            spans.push((opens, opens + length));
        }
    }
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    if let Some(&(start, end)) = merged
        .iter()
        .find(|(start, end)| *start <= now_unix && now_unix < *end)
    {
        // The pattern repeats weekly: a stretch as long as a week covers
        // every week, so it never closes.
        let closes_at = (end - start < WEEK).then_some(end);
        return WindowState {
            open: true,
            closes_at,
            next_open: None,
        };
    }
    WindowState {
        open: false,
        closes_at: None,
        next_open: merged
            .iter()
            .map(|(start, _)| *start)
            .find(|start| *start > now_unix),
    }
}

/// `YYYY-MM-DD HH:MM UTC` for a Unix time, as operators read it.
pub fn format_utc(unix: u64) -> String {
    let days = unix / DAY;
    let seconds = unix % DAY;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        seconds / 3600,
        seconds % 3600 / 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Duration, TimeOfDay};

    /// 2024-01-01 00:00 UTC, a Monday.
    const MONDAY: u64 = 1_704_067_200;
    const HOUR: u64 = 3600;

    fn window(days: &[Weekday], start: &str, duration: &str) -> MaintenanceWindow {
        MaintenanceWindow {
            days: days.to_vec(),
            start: TimeOfDay::try_from(start).expect("a valid time"),
            duration: Duration::try_from(duration)
                .expect("a valid duration")
                .into(),
        }
    }

    fn open_until(closes_at: u64) -> WindowState {
        WindowState {
            open: true,
            closes_at: Some(closes_at),
            next_open: None,
        }
    }

    fn closed_until(next_open: u64) -> WindowState {
        WindowState {
            open: false,
            closes_at: None,
            next_open: Some(next_open),
        }
    }

    #[test]
    fn the_calendar_is_right() {
        assert_eq!(weekday_of(MONDAY / DAY), Weekday::Mon);
        assert_eq!(weekday_of(0), Weekday::Thu);
        assert_eq!(format_utc(MONDAY), "2024-01-01 00:00 UTC");
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(
            format_utc(MONDAY + 59 * DAY + 13 * HOUR + 5 * 60),
            "2024-02-29 13:05 UTC"
        );
    }

    #[test]
    fn no_windows_is_always_open() {
        assert_eq!(
            window_state(&[], MONDAY),
            WindowState {
                open: true,
                closes_at: None,
                next_open: None
            }
        );
    }

    #[test]
    fn a_daily_window() {
        let windows = [window(&[], "02:00", "2h")];
        assert_eq!(
            window_state(&windows, MONDAY + HOUR),
            closed_until(MONDAY + 2 * HOUR)
        );
        assert_eq!(
            window_state(&windows, MONDAY + 2 * HOUR),
            open_until(MONDAY + 4 * HOUR)
        );
        assert_eq!(
            window_state(&windows, MONDAY + 4 * HOUR - 1),
            open_until(MONDAY + 4 * HOUR)
        );
        // Closed at its end; the next opens tomorrow.
        assert_eq!(
            window_state(&windows, MONDAY + 4 * HOUR),
            closed_until(MONDAY + DAY + 2 * HOUR)
        );
    }

    #[test]
    fn a_window_crossing_midnight_belongs_to_the_day_it_opens() {
        // Tuesday 22:00 to Wednesday 03:00.
        let windows = [window(&[Weekday::Tue], "22:00", "5h")];
        let tuesday = MONDAY + DAY;
        assert_eq!(
            window_state(&windows, tuesday + 23 * HOUR),
            open_until(tuesday + 27 * HOUR)
        );
        assert_eq!(
            window_state(&windows, tuesday + DAY + HOUR),
            open_until(tuesday + 27 * HOUR)
        );
        // Wednesday 03:00: closed until next Tuesday 22:00.
        assert_eq!(
            window_state(&windows, tuesday + 27 * HOUR),
            closed_until(tuesday + WEEK + 22 * HOUR)
        );
        // Monday 23:00 is not in it (it opens on Tuesdays only).
        assert_eq!(
            window_state(&windows, MONDAY + 23 * HOUR),
            closed_until(tuesday + 22 * HOUR)
        );
    }

    #[test]
    fn a_sunday_window_wraps_into_monday() {
        // Sunday 23:00 to Monday 01:00.
        let windows = [window(&[Weekday::Sun], "23:00", "2h")];
        let sunday = MONDAY + 6 * DAY;
        // Monday 00:30 of the first week: inside the window opened the
        // Sunday before (2023-12-31).
        assert_eq!(
            window_state(&windows, MONDAY + 30 * 60),
            open_until(MONDAY + HOUR)
        );
        // Monday 01:00: closed until Sunday 23:00.
        assert_eq!(
            window_state(&windows, MONDAY + HOUR),
            closed_until(sunday + 23 * HOUR)
        );
        assert_eq!(
            window_state(&windows, sunday + 23 * HOUR + 1),
            open_until(sunday + 25 * HOUR)
        );
    }

    #[test]
    fn overlapping_and_adjacent_windows_are_one_stretch() {
        let windows = [
            window(&[Weekday::Mon], "01:00", "2h"),
            window(&[Weekday::Mon], "02:00", "2h"),
            window(&[Weekday::Mon], "04:00", "1h"),
        ];
        assert_eq!(
            window_state(&windows, MONDAY + HOUR),
            open_until(MONDAY + 5 * HOUR)
        );
        assert_eq!(
            window_state(&windows, MONDAY + 5 * HOUR),
            closed_until(MONDAY + WEEK + HOUR)
        );
    }

    #[test]
    fn windows_covering_the_whole_week_never_close() {
        let daily = [window(&[], "00:00", "1d")];
        assert_eq!(
            window_state(&daily, MONDAY + 5 * HOUR),
            WindowState {
                open: true,
                closes_at: None,
                next_open: None
            }
        );
        let weekly = [window(&[Weekday::Wed], "12:00", "7d")];
        assert_eq!(window_state(&weekly, MONDAY).closes_at, None);
        assert!(window_state(&weekly, MONDAY).open);
    }

    #[test]
    fn a_weekend_window_seen_from_midweek() {
        let windows = [window(&[Weekday::Sat, Weekday::Sun], "06:00", "12h")];
        let wednesday = MONDAY + 2 * DAY;
        assert_eq!(
            window_state(&windows, wednesday + 10 * HOUR),
            closed_until(MONDAY + 5 * DAY + 6 * HOUR)
        );
        // Saturday 18:00: closed until Sunday 06:00.
        assert_eq!(
            window_state(&windows, MONDAY + 5 * DAY + 18 * HOUR),
            closed_until(MONDAY + 6 * DAY + 6 * HOUR)
        );
    }
}
