//! Following the serial console: QEMU writes it to `console.log` (its `file` chardev), and the runner
//! tails that file — echoing it to the terminal and recording when each line arrived.
//!
//! Why a file and not a pipe: a detached VM must keep logging after the runner exits, and a pipe
//! would then break QEMU's serial port. The arrival times (host seconds since QEMU started) go to
//! `console.timed.log`, one `"<secs>\t<line>"` per console line; they are what lets
//! the `timing` module measure the firmware phase, which prints no timestamps of its own.

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the follower looks for new console output: also the resolution of the arrival times.
const POLL: Duration = Duration::from_millis(20);
const ESC: char = '\u{1b}';

/// One console line: its text (carriage returns and terminal escape sequences removed) and, when it
/// was observed live, the host time it arrived (seconds since QEMU started).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleLine {
    pub host_secs: Option<f64>,
    pub text: String,
}

/// `console.log` → `console.timed.log` (beside it).
pub fn timed_log_path(console_log: &Path) -> PathBuf {
    console_log.with_extension("timed.log")
}

/// Removes ANSI/VT100 escape sequences (OVMF clears the screen and sets modes on the serial port) and
/// carriage returns, so that lines can be matched and printed as text.
pub fn clean_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ESC => {
                // CSI: ESC '[' parameters… final byte (0x40..=0x7e); other escapes: ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for p in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&p) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Formats one line of `console.timed.log`.
pub fn timed_line(host_secs: f64, text: &str) -> String {
    format!("{host_secs:.3}\t{text}\n")
}

/// Parses `console.timed.log`.
pub fn parse_timed_log(text: &str) -> Vec<ConsoleLine> {
    text.lines()
        .map(|l| match l.split_once('\t') {
            Some((t, rest)) => match t.parse::<f64>() {
                Ok(secs) => ConsoleLine {
                    host_secs: Some(secs),
                    text: rest.to_string(),
                },
                Err(_) => ConsoleLine {
                    host_secs: None,
                    text: l.to_string(),
                },
            },
            None => ConsoleLine {
                host_secs: None,
                text: l.to_string(),
            },
        })
        .collect()
}

/// Parses a raw console log (no arrival times).
pub fn parse_raw_log(bytes: &[u8]) -> Vec<ConsoleLine> {
    String::from_utf8_lossy(bytes)
        .split('\n')
        .map(|l| ConsoleLine {
            host_secs: None,
            text: clean_line(l),
        })
        .filter(|l| !l.text.is_empty())
        .collect()
}

/// Splits complete lines off the front of `pending`, leaving an unfinished last line in it.
fn take_lines(pending: &mut Vec<u8>) -> Vec<String> {
    let Some(last_nl) = pending.iter().rposition(|&b| b == b'\n') else {
        return vec![];
    };
    let rest = pending.split_off(last_nl + 1);
    let done = std::mem::replace(pending, rest);
    String::from_utf8_lossy(&done)
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(clean_line)
        .collect()
}

/// A thread tailing `console.log` while the runner watches the VM.
pub struct Follower {
    stop: Arc<AtomicBool>,
    lines: Arc<Mutex<Vec<ConsoleLine>>>,
    handle: Option<JoinHandle<()>>,
}

struct Tail {
    log: PathBuf,
    timed: File,
    started: Instant,
    echo: bool,
    stop: Arc<AtomicBool>,
    lines: Arc<Mutex<Vec<ConsoleLine>>>,
}

impl Follower {
    /// Starts following `console_log` (which QEMU creates; it may not exist yet). `started` is when
    /// QEMU was started; `echo` copies the console to stdout as it arrives.
    pub fn start(console_log: &Path, started: Instant, echo: bool) -> Result<Self> {
        let timed_path = timed_log_path(console_log);
        let timed = File::create(&timed_path)
            .with_context(|| format!("cannot create {}", timed_path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let tail = Tail {
            log: console_log.to_path_buf(),
            timed,
            started,
            echo,
            stop: stop.clone(),
            lines: lines.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || tail.run())
            .context("cannot start the console follower thread")?;
        Ok(Follower {
            stop,
            lines,
            handle: Some(handle),
        })
    }

    /// The lines seen so far.
    pub fn lines(&self) -> Vec<ConsoleLine> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Reads what is left, stops, and returns every line seen.
    pub fn finish(mut self) -> Vec<ConsoleLine> {
        self.stop_thread();
        self.lines()
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

impl Tail {
    fn run(mut self) {
        let mut file = None;
        let mut pending = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Read the stop flag first: after it is set, one more full read drains the file.
            let stopping = self.stop.load(Ordering::SeqCst);
            if file.is_none() {
                file = File::open(&self.log).ok();
            }
            if let Some(f) = file.as_mut() {
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    self.echo_bytes(&buf[..n]);
                    pending.extend_from_slice(&buf[..n]);
                }
                let lines = take_lines(&mut pending);
                self.record(lines);
            }
            if stopping {
                if !pending.is_empty() {
                    pending.push(b'\n');
                    let lines = take_lines(&mut pending);
                    self.record(lines);
                }
                return;
            }
            std::thread::sleep(POLL);
        }
    }

    fn echo_bytes(&self, bytes: &[u8]) {
        if self.echo {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(bytes);
            let _ = out.flush();
        }
    }

    fn record(&mut self, texts: Vec<String>) {
        if texts.is_empty() {
            return;
        }
        // Milliseconds: the resolution the timed log keeps (and the poll interval is coarser anyway).
        let secs = self.started.elapsed().as_millis() as f64 / 1000.0;
        let mut out = String::new();
        for t in &texts {
            out.push_str(&timed_line(secs, t));
        }
        let _ = self.timed.write_all(out.as_bytes());
        if let Ok(mut lines) = self.lines.lock() {
            lines.extend(texts.into_iter().map(|text| ConsoleLine {
                host_secs: Some(secs),
                text,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_carriage_returns_are_removed() {
        // What OVMF 2022.11 writes before its first message (seen on a real boot).
        let raw =
            "\u{1b}[2J\u{1b}[01;01H\u{1b}[=3h\u{1b}[2J\u{1b}[01;01HBdsDxe: loading Boot0001\r";
        assert_eq!(clean_line(raw), "BdsDxe: loading Boot0001");
        assert_eq!(
            clean_line("[    2.1] cvm-init: x\r"),
            "[    2.1] cvm-init: x"
        );
    }

    #[test]
    fn complete_lines_are_split_off_and_the_rest_kept() {
        let mut p = b"a\r\nb\n\nc".to_vec();
        assert_eq!(take_lines(&mut p), ["a", "b"]);
        assert_eq!(p, b"c");
        assert!(take_lines(&mut p).is_empty());
    }

    #[test]
    fn timed_log_round_trips() {
        let text = format!("{}{}", timed_line(1.5, "x\ty"), timed_line(12.25, "z"));
        assert_eq!(text, "1.500\tx\ty\n12.250\tz\n");
        assert_eq!(
            parse_timed_log(&text),
            [
                ConsoleLine {
                    host_secs: Some(1.5),
                    text: "x\ty".into()
                },
                ConsoleLine {
                    host_secs: Some(12.25),
                    text: "z".into()
                },
            ]
        );
    }

    #[test]
    fn follower_sees_lines_written_later_and_the_unterminated_last_one() {
        let dir = std::env::temp_dir().join(format!("cvm-console-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("console.log");
        let _ = std::fs::remove_file(&log);
        let f = Follower::start(&log, Instant::now(), false).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        std::fs::write(&log, b"one\r\ntwo\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(b"three").unwrap();
        let lines = f.finish();
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["one", "two", "three"]);
        assert!(lines.iter().all(|l| l.host_secs.is_some()));
        let timed = std::fs::read_to_string(timed_log_path(&log)).unwrap();
        assert_eq!(parse_timed_log(&timed), lines);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
