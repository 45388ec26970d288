//! Human output: sizes in KiB/MiB/GiB, aligned tables, JSON.

use std::io::Write;

use anyhow::Result;
use bytesize::ByteSize;
use serde::Serialize;

/// A size for people: `1.5 MiB`.
pub fn size(bytes: u64) -> String {
    ByteSize(bytes).display().iec().to_string()
}

/// A throughput for people: `120.3 MiB/s`.
pub fn rate(bytes: u64, seconds: f64) -> String {
    if seconds <= 0.0 {
        return "-".into();
    }
    format!("{}/s", size((bytes as f64 / seconds) as u64))
}

/// Prints `value` as pretty JSON on standard output.
pub fn json<T: Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A table with aligned columns; numeric-looking columns align right.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
}

impl Table {
    /// A table with these column titles; `right` marks right-aligned columns.
    pub fn new(header: Vec<&'static str>, right: Vec<bool>) -> Table {
        Table { header, rows: Vec::new(), right }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints the table on standard output.
    pub fn print(&self) -> Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = std::io::stdout().lock();
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                if i > 0 {
                    line.push_str("  ");
                }
                if self.right.get(i).copied().unwrap_or(false) {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i + 1 < row.len() {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}

/// A time in the local zone: `2026-11-23 14:03:07`, with `.123456789` ns when `precise`.
pub fn local_time(ns: i64, precise: bool) -> String {
    let Ok(stamp) = jiff::Timestamp::from_nanosecond(i128::from(ns)) else { return format!("@{ns}ns") };
    let zoned = stamp.to_zoned(jiff::tz::TimeZone::system());
    if precise {
        zoned.strftime("%Y-%m-%d %H:%M:%S.%f %z").to_string()
    } else {
        zoned.strftime("%Y-%m-%d %H:%M:%S").to_string()
    }
}

/// `ls -l`'s mode column: `drwxr-sr-x`, `-rwsr-xr-t`.
pub fn mode_string(kind: cairn_store::dataset::EntryKind, mode: u32) -> String {
    let mut out = String::with_capacity(10);
    out.push(match kind.letter() {
        'f' => '-',
        letter => letter,
    });
    let special = [(0o4000, 's'), (0o2000, 's'), (0o1000, 't')];
    for (i, (bit, letter)) in special.iter().enumerate() {
        let shift = 6 - 3 * i;
        out.push(if mode >> shift & 4 != 0 { 'r' } else { '-' });
        out.push(if mode >> shift & 2 != 0 { 'w' } else { '-' });
        let exec = mode >> shift & 1 != 0;
        out.push(match (mode & bit != 0, exec) {
            (true, true) => *letter,
            (true, false) => letter.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    out
}
