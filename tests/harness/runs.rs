//! `dwh` runs in the background while a test takes a service away: pause points that hold a run
//! at a named step, runs whose log is read as it comes, and what they ended with.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Env;

/// How long a run may take to reach a pause point or to log a line.
const REACH: Duration = Duration::from_secs(120);
/// How long a run may take at most, whatever it waits for.
pub const RUN_LIMIT: Duration = Duration::from_secs(300);

/// A pause point (`DWH_PAUSE`): the run creates the file when it reaches the step and waits
/// until it is gone.
pub struct Pause {
    file: PathBuf,
    point: String,
}

impl Pause {
    pub fn at(env: &Env, point: &str) -> Pause {
        let file =
            std::env::temp_dir().join(format!("{}-pause-{}", env.name, point.replace(':', "-")));
        let _ = std::fs::remove_file(&file);
        Pause {
            file,
            point: point.to_owned(),
        }
    }

    /// The env vars that make a run stop here.
    pub fn env(&self) -> [(&str, &str); 2] {
        [
            ("DWH_PAUSE", self.point.as_str()),
            ("DWH_PAUSE_FILE", self.file.to_str().unwrap()),
        ]
    }

    /// Wait until `run` stops here; fail at once if it ends first.
    pub fn reached(&self, run: &mut Background) {
        let deadline = Instant::now() + REACH;
        while !self.file.exists() {
            if let Some(status) = run.child.try_wait().unwrap() {
                panic!(
                    "the run ended ({status}) before {}: {}",
                    self.point,
                    run.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {}",
                self.point
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Let the run go on.
    pub fn release(&self) {
        std::fs::remove_file(&self.file).unwrap();
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// A `dwh` run in the background, its stderr read as it comes (retries are logged at info).
pub struct Background {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    started: Instant,
}

/// How a background run ended.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub seconds: f64,
}

impl Background {
    pub fn start(mut cmd: Command) -> Background {
        let started = Instant::now();
        let mut child = cmd.spawn().expect("the dwh binary runs");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        Background {
            child,
            stderr,
            reader: Some(reader),
            started,
        }
    }

    /// What the run logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether the run has not ended yet.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait until the run logs a line containing `needle`.
    pub fn logged(&self, needle: &str) {
        let deadline = Instant::now() + REACH;
        while !self.stderr.lock().unwrap().contains(needle) {
            let so_far = self.stderr();
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log: {so_far}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until the run ends (killed, and the test failed, after [`RUN_LIMIT`]).
    pub fn finish(mut self) -> Finished {
        let deadline = self.started + RUN_LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the run did not end within {RUN_LIMIT:?}: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let seconds = self.started.elapsed().as_secs_f64();
        // The summary line: small enough for the pipe, so it is all there once the run ended.
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        self.reader.take().unwrap().join().unwrap();
        Finished {
            status,
            stdout,
            stderr: self.stderr(),
            seconds,
        }
    }
}

impl Drop for Background {
    /// A test that fails halfway leaves no run behind.
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Finished {
    /// The run succeeded; its stdout (the summary line).
    pub fn succeeded(&self) -> &str {
        assert!(self.status.success(), "{}", self.stderr);
        &self.stdout
    }

    /// The run failed with one line naming `service`, and printed neither the job users'
    /// password nor any of `secrets`.
    pub fn failed_naming(&self, service: &str, secrets: &[&str]) -> &str {
        assert_eq!(
            self.status.code(),
            Some(1),
            "{}{}",
            self.stdout,
            self.stderr
        );
        let line = self.stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "one line: {line}");
        assert!(line.contains(&format!("{service} at ")), "{line}");
        for secret in secrets.iter().chain([&super::ROLE_PASSWORD]) {
            assert!(!line.contains(secret), "password printed: {line}");
        }
        eprintln!("as expected after {:.1} s: {line}", self.seconds);
        line
    }
}
