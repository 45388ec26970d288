//! Human output: sizes in KiB/MiB/GiB, aligned tables, JSON, and names
//! made safe for a terminal.
//!
//! Names come from the trees of datasets (and so from whoever could name a
//! file in a backed-up directory, or from a remote's records): a name
//! holding an escape sequence, written as it is, would rewrite the user's
//! screen. As GNU `ls` does, they are escaped when the output goes to a
//! terminal ([`Names`]), and written as the bytes they are otherwise, so
//! that `cairn find ... | xargs` and files get exact names. `--json` output
//! is never escaped this way: JSON escapes control characters itself.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};

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

/// A JSON array written one element at a time, one per line, so that a
/// command listing millions of things (`find`, `diff`) holds none of them.
pub struct JsonArray<W: Write> {
    out: W,
    first: bool,
}

impl<W: Write> JsonArray<W> {
    /// Opens the array on `out`.
    pub fn new(mut out: W) -> std::io::Result<JsonArray<W>> {
        out.write_all(b"[")?;
        Ok(JsonArray { out, first: true })
    }

    /// Writes one element.
    pub fn push<T: Serialize>(&mut self, item: &T) -> std::io::Result<()> {
        let comma = if std::mem::take(&mut self.first) { "" } else { "," };
        write!(self.out, "{comma}\n  ")?;
        serde_json::to_writer(&mut self.out, item).map_err(std::io::Error::from)
    }

    /// Closes the array and flushes.
    pub fn finish(mut self) -> std::io::Result<()> {
        writeln!(self.out, "{}]", if self.first { "" } else { "\n" })?;
        self.out.flush()
    }
}

/// A failed write to standard output, as the store's error type (for
/// callbacks that the store calls).
pub fn stdout_error(cause: std::io::Error) -> cairn_store::Error {
    cairn_store::Error::Output { what: "standard output".into(), cause }
}

/// How names (file names, paths, labels, keys, targets) are written for
/// people on one output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    /// The bytes they are.
    Exact,
    /// C-style escapes, as `ls --quoting-style=escape` (`ls -b`) writes
    /// them: `\n`, `\t`, `\\` and friends, and three octal digits
    /// (`\033` for ESC) for the other control characters (C0, DEL, C1),
    /// for the marks that reorder text (U+202E and the other bidirectional
    /// controls), and for each byte that is not UTF-8. Everything else,
    /// other scripts included, is written as it is.
    Escaped,
}

impl Names {
    /// The rule of GNU `ls`: escaped when the stream is a terminal.
    pub fn for_stream(is_terminal: bool) -> Names {
        if is_terminal { Names::Escaped } else { Names::Exact }
    }

    /// For standard output.
    pub fn stdout() -> Names {
        Names::for_stream(std::io::stdout().is_terminal())
    }

    /// For standard error (warnings and errors that name paths).
    pub fn stderr() -> Names {
        Names::for_stream(std::io::stderr().is_terminal())
    }

    /// `name` as this stream gets it.
    pub fn bytes(self, name: &[u8]) -> Cow<'_, [u8]> {
        match self {
            Names::Exact => Cow::Borrowed(name),
            Names::Escaped if !needs_escape(name) => Cow::Borrowed(name),
            Names::Escaped => Cow::Owned(escape(name).into_bytes()),
        }
    }

    /// `text` (a message, a path made lossy) as this stream gets it.
    pub fn text(self, text: &str) -> Cow<'_, str> {
        match self {
            Names::Exact => Cow::Borrowed(text),
            Names::Escaped if !needs_escape(text.as_bytes()) => Cow::Borrowed(text),
            Names::Escaped => Cow::Owned(escape(text.as_bytes())),
        }
    }
}

/// Characters a terminal acts on or that reorder what is shown: the
/// control characters (C0, DEL, C1) and the bidirectional formatting marks.
fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn needs_escape(name: &[u8]) -> bool {
    name.utf8_chunks()
        .any(|chunk| !chunk.invalid().is_empty() || chunk.valid().chars().any(|c| c == '\\' || is_unsafe_char(c)))
}

/// `name` with [`Names::Escaped`]'s escapes: printable, and the same bytes
/// for the same name only.
pub fn escape(name: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(name.len() + 8);
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\x0b' => out.push_str("\\v"),
                '\x0c' => out.push_str("\\f"),
                '\r' => out.push_str("\\r"),
                c if is_unsafe_char(c) => {
                    for byte in c.encode_utf8(&mut [0; 4]).bytes() {
                        let _ = write!(out, "\\{byte:03o}");
                    }
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\{byte:03o}");
        }
    }
    out
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

    /// Prints the table on standard output (cells escaped on a terminal,
    /// since sources, labels and keys can hold any character).
    pub fn print(&self) -> Result<()> {
        let names = Names::stdout();
        let rows: Vec<Vec<String>> =
            self.rows.iter().map(|row| row.iter().map(|cell| names.text(cell).into_owned()).collect()).collect();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = std::io::stdout().lock();
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&rows) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_only_for_a_terminal() {
        let hostile = b"a\x1b]0;owned\x07\x1b[2Jb";
        assert_eq!(Names::for_stream(true), Names::Escaped);
        assert_eq!(Names::for_stream(false), Names::Exact);
        assert_eq!(&*Names::for_stream(false).bytes(hostile), hostile);
        let escaped = Names::for_stream(true).bytes(hostile);
        assert_eq!(&*escaped, br"a\033]0;owned\a\033[2Jb");
        assert!(escaped.iter().all(|b| (0x20..0x7f).contains(b)), "{escaped:?}");
    }

    #[test]
    fn escapes_follow_ls_b() {
        assert_eq!(escape(b"plain name.txt"), "plain name.txt");
        assert_eq!(escape("caf\u{e9} \u{65e5}\u{672c}".as_bytes()), "caf\u{e9} \u{65e5}\u{672c}", "other scripts stay");
        assert_eq!(escape(b"tab\there\nnew\r\x7f"), r"tab\there\nnew\r\177");
        assert_eq!(escape(br"back\slash"), r"back\\slash", "a backslash cannot pass for an escape");
        assert_eq!(escape(b"bad\xff\xfe"), r"bad\377\376", "bytes that are not UTF-8");
        // C1 CSI (U+009B) starts an escape sequence on some terminals;
        // U+202E turns the rest of the line around.
        assert_eq!(escape("x\u{9b}31m".as_bytes()), r"x\302\23331m");
        assert_eq!(escape("evil\u{202e}txt.exe".as_bytes()), r"evil\342\200\256txt.exe");
        assert_eq!(Names::Escaped.text("fine"), Cow::Borrowed("fine"));
    }
}
