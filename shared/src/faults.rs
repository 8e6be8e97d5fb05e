//! Test hooks: crash or hold a run at a named point of the batch protocol.
//!
//! Compiled into debug builds only — the builds the tests run. A release binary has no hook: no
//! environment variable can abort or block a production run.

/// Crash here if `DWH_FAULT` names this point (`<job>:<point>`); used by the crash tests.
///
/// The points of every consuming run, in order: `before-drain` (locks held, outbox republished),
/// `after-drain`, `after-copy` (the job's stage tables are filled), `after-merge`,
/// `before-commit`, `after-commit`, `mid-publish` (some of the outbox sent, none of it cleared),
/// `after-publish`; and `cdm:mid-full` (the first chunk of `dwh cdm --full` committed).
///
/// Or hold the run here if `DWH_PAUSE` names it: the run creates the file `DWH_PAUSE_FILE` and
/// waits until it is removed; the outage tests stop a service meanwhile. (It blocks the thread
/// the run's steps are on; connections live on the runtime's workers and notice what happens.)
#[cfg(debug_assertions)]
pub fn fault_point(job: &str, point: &str) {
    let here = format!("{job}:{point}");
    if std::env::var("DWH_FAULT").is_ok_and(|wanted| wanted == here) {
        eprintln!("dwh {job}: injected crash at {point}");
        std::process::abort();
    }
    if std::env::var("DWH_PAUSE").is_ok_and(|wanted| wanted == here) {
        if let Some(file) = std::env::var_os("DWH_PAUSE_FILE") {
            let file = std::path::Path::new(&file);
            if std::fs::write(file, here.as_bytes()).is_ok() {
                while file.exists() {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
    }
}

/// A release build: no hook.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn fault_point(_job: &str, _point: &str) {}
