//! Progress bars on standard error, drawn only when it is a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_store::dataset::Progress;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-counting bar (known total) or spinner (unknown total), hidden when
/// standard error is not a terminal or `enabled` is false.
pub fn bytes_bar(enabled: bool, total: Option<u64>, message: &str) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {binary_bytes} {binary_bytes_per_sec}")
                .expect("valid template"),
        ),
    };
    if enabled && std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(200));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_message(crate::output::Names::stderr().text(message).into_owned());
    bar
}

/// Runs `work` while a bar on standard error follows `progress` (a spinner
/// with files/s and bytes/s while the total is unknown, a bar with an ETA
/// once it is known). Without a terminal, just runs `work`.
pub fn track<T>(enabled: bool, label: &str, progress: &Progress, work: impl FnOnce() -> T) -> T {
    track_counting(enabled, label, "files", progress, work)
}

/// [`track`], counting `unit` ("containers") instead of files.
pub fn track_counting<T>(enabled: bool, label: &str, unit: &str, progress: &Progress, work: impl FnOnce() -> T) -> T {
    if !(enabled && std::io::stderr().is_terminal()) {
        return work();
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let started = Instant::now();
            let mut bar: Option<(ProgressBar, bool)> = None;
            while !done.load(Ordering::Relaxed) {
                let total = progress.total_bytes.load(Ordering::Relaxed);
                let known = total > 0;
                if bar.as_ref().is_none_or(|(_, had_total)| *had_total != known) {
                    if let Some((old, _)) = bar.take() {
                        old.finish_and_clear();
                    }
                    bar = Some((bytes_bar(true, known.then_some(total), label), known));
                }
                let (bar, _) = bar.as_ref().expect("made above");
                bar.set_position(progress.bytes.load(Ordering::Relaxed));
                let files = progress.files.load(Ordering::Relaxed);
                let total_files = progress.total_files.load(Ordering::Relaxed);
                let per_second = files as f64 / started.elapsed().as_secs_f64().max(0.001);
                let count = if total_files > 0 { format!("{files}/{total_files}") } else { files.to_string() };
                bar.set_message(format!("{label}: {count} {unit} ({per_second:.0}/s)"));
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some((bar, _)) = bar {
                bar.finish_and_clear();
            }
        });
        let out = work();
        done.store(true, Ordering::Relaxed);
        out
    })
}
