//! Progress of long work (replay, backfill, `cdm --full`): a bar on a terminal, plain lines in logs.
//!
//! On a terminal (stderr) the work shows an indicatif bar; anywhere else (a CronJob's log, CI) it
//! prints one plain line `<what>: <done>/<total> (<percent>%)` at most every
//! [`PLAIN_EVERY`], and one when it ends, so a log shows the work moving without a line per item.
//!
//! ```no_run
//! let progress = dwh_shared::progress::Progress::new("users", 1_000);
//! for _ in 0..10 {
//!     progress.inc(100);
//! }
//! progress.finish();
//! ```

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the plain (non-terminal) form prints a line.
pub const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// Progress of one piece of work with a known total.
pub struct Progress {
    what: String,
    total: u64,
    shown: Shown,
}

enum Shown {
    Bar(ProgressBar),
    Plain(Mutex<Plain>),
}

struct Plain {
    done: u64,
    last_line: Instant,
}

impl Progress {
    /// Progress of `total` units of `what`: a bar when stderr is a terminal, plain lines otherwise.
    pub fn new(what: &str, total: u64) -> Progress {
        Progress::with_terminal(what, total, std::io::stderr().is_terminal())
    }

    /// Like [`Progress::new`], choosing the form explicitly.
    pub fn with_terminal(what: &str, total: u64, terminal: bool) -> Progress {
        let shown = if terminal {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_message(what.to_owned());
            Shown::Bar(bar)
        } else {
            Shown::Plain(Mutex::new(Plain {
                done: 0,
                last_line: Instant::now(),
            }))
        };
        Progress {
            what: what.to_owned(),
            total,
            shown,
        }
    }

    /// `n` more units done.
    pub fn inc(&self, n: u64) {
        match &self.shown {
            Shown::Bar(bar) => bar.inc(n),
            Shown::Plain(plain) => {
                let mut plain = plain.lock().expect("progress lock");
                plain.done += n;
                if plain.last_line.elapsed() >= PLAIN_EVERY {
                    plain.last_line = Instant::now();
                    eprintln!("{}", self.line(plain.done));
                }
            }
        }
    }

    /// The work ended: clear the bar, or print the last plain line.
    pub fn finish(&self) {
        match &self.shown {
            Shown::Bar(bar) => bar.finish_and_clear(),
            Shown::Plain(plain) => {
                let plain = plain.lock().expect("progress lock");
                eprintln!("{}", self.line(plain.done));
            }
        }
    }

    /// The work stopped before its end (the caller says how far it got): clear the bar, print
    /// no plain line.
    pub fn stop(&self) {
        if let Shown::Bar(bar) = &self.shown {
            bar.finish_and_clear();
        }
    }

    /// The plain line for `done` units.
    fn line(&self, done: u64) -> String {
        let percent = if self.total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / self.total as f64
        };
        format!("{}: {done}/{} ({percent:.0}%)", self.what, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn plain_lines_name_the_work_and_the_share_done() {
        let progress = Progress::with_terminal("users", 200, false);
        assert_eq!(progress.line(50), "users: 50/200 (25%)");
        assert_eq!(
            Progress::with_terminal("x", 0, false).line(0),
            "x: 0/0 (100%)"
        );
    }
}
