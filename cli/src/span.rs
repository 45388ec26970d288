//! Spans of time from the command line (`30d`, `1y 6mo`, `90s`), checked
//! before they are used.
//!
//! cairn records times as signed 64-bit nanoseconds since 1970, which end
//! on 2262-04-11. A span whose end falls past that cannot be recorded: an
//! unchecked `backup --expire-after 300y` wrapped around to an expiry in
//! the 1700s, so the next `forget --expired` dropped the dataset, and
//! `gc --every 300y` wrapped to a negative period and ran without pause.
//! The value parsers here refuse such spans (and negative or zero ones
//! where they make no sense) while the arguments are parsed, so clap
//! reports them as usage errors (exit 2) before anything is touched.

use std::time::Duration;

use cairn_store::LockWait;
use jiff::{Span, Zoned};

/// Nanoseconds from `now` to `now + span` (calendar units count as they
/// fall: `1mo` from January 31 is 29, 30 or 31 days), or why that end
/// cannot be recorded.
pub fn nanos_from(now: &Zoned, span: Span) -> Result<i64, String> {
    let later = now.checked_add(span).map_err(|e| format!("'{span:#}' from now is not a date ({e})"))?;
    let end = i64::try_from(later.timestamp().as_nanosecond()).map_err(|_| too_far(span))?;
    let start = i64::try_from(now.timestamp().as_nanosecond()).map_err(|_| too_far(span))?;
    end.checked_sub(start).ok_or_else(|| too_far(span))
}

fn too_far(span: Span) -> String {
    format!(
        "'{span:#}' ends too far in the future: cairn records times as nanoseconds since 1970 in 64 bits, \
         which end on 2262-04-11; give a shorter span"
    )
}

fn parse(text: &str) -> Result<Span, String> {
    text.parse::<Span>().map_err(|e| format!("'{text}' is not a span of time such as 90s, 30m, 12h, 30d, 1y 6mo ({e})"))
}

/// A span that is not negative and ends at a time cairn can record
/// (`backup --expire-after`; `0s` expires at once).
pub fn future_span(text: &str) -> Result<Span, String> {
    let span = parse(text)?;
    if span.is_negative() {
        return Err(format!("'{text}' is negative; give a span from now (such as 30d)"));
    }
    nanos_from(&Zoned::now(), span)?;
    Ok(span)
}

/// A positive span that ends at a time cairn can record (`gc --every`:
/// a zero period would run the job back to back without end).
pub fn period(text: &str) -> Result<Span, String> {
    let span = future_span(text)?;
    if span.is_zero() {
        return Err(format!("'{text}' is no time at all; give how long to wait between runs (such as 1h)"));
    }
    Ok(span)
}

/// A span that is not negative (`forget --keep-within`; one longer than
/// the history keeps all of it).
pub fn past_span(text: &str) -> Result<Span, String> {
    let span = parse(text)?;
    if span.is_negative() {
        return Err(format!("'{text}' is negative; give how far back to keep (such as 7d)"));
    }
    Ok(span)
}

/// `--wait[=SPAN]`: `forever` (what a bare `--wait` means) or a span.
pub fn lock_wait(text: &str) -> Result<LockWait, String> {
    if text == "forever" {
        return Ok(LockWait::Forever);
    }
    let span = parse(text).map_err(|e| {
        format!(
            "{e}; --wait takes an optional span: to wait without a limit, write --wait after the other \
             arguments or as --wait=forever"
        )
    })?;
    if span.is_negative() {
        return Err(format!("'{text}' is negative; give how long to wait for the store lock (such as 5m)"));
    }
    let nanos = nanos_from(&Zoned::now(), span)?;
    Ok(LockWait::For(Duration::from_nanos(nanos.unsigned_abs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_past_2262_are_refused() {
        let error = future_span("300y").unwrap_err();
        assert!(error.contains("2262"), "{error}");
        assert!(future_span("200y").is_ok());
        let now: Zoned = "2026-12-03T10:00:00+00:00[UTC]".parse().unwrap();
        assert!(nanos_from(&now, Span::new().years(300)).is_err());
        assert!(nanos_from(&now, Span::new().years(235)).is_ok());
        assert!(nanos_from(&now, Span::new().years(236)).is_err(), "2262-12 is past 2262-04-11");
        assert_eq!(nanos_from(&now, Span::new().days(1)), Ok(86_400_000_000_000));
        // The largest span jiff takes, in the smallest unit that can hold it.
        assert!(future_span("19998y").is_err());
    }

    #[test]
    fn negative_and_zero_spans_are_refused_where_they_make_no_sense() {
        assert!(future_span("0s").is_ok(), "expires at once");
        assert!(period("0s").is_err());
        assert!(period("1s").is_ok());
        assert!(period("300y").is_err());
        assert!(future_span("-1d").is_err());
        assert!(future_span("1d ago").is_err());
        assert!(past_span("-1d").is_err());
        assert!(past_span("0s").is_ok());
        assert!(past_span("19998y").is_ok(), "longer than any history keeps everything");
        assert!(lock_wait("-5s").is_err());
    }

    #[test]
    fn lock_waits() {
        assert_eq!(lock_wait("forever"), Ok(LockWait::Forever));
        assert_eq!(lock_wait("90s"), Ok(LockWait::For(Duration::from_secs(90))));
        assert_eq!(lock_wait("0s"), Ok(LockWait::For(Duration::ZERO)));
        let error = lock_wait("/home/me").unwrap_err();
        assert!(error.contains("--wait=forever"), "{error}");
        assert!(lock_wait("300y").is_err());
    }
}
