//! Failures of notebook cells that nobody can miss. Every notebook calls [`guard`] in its
//! first code cell; from then on every cell that ends in an error or a panic prints a line
//! starting with [`CELL_FAILED`] to its standard output, which `notebooks/run.py` (the
//! headless runner) turns into a failed notebook.
//!
//! # Why a guard is needed (evcxr 0.22)
//! evcxr runs every cell as a function in a child process and reads the child's stdout line by
//! line until the line `EVCXR_EXECUTION_COMPLETE`, so whatever a cell prints to stdout is in
//! its output before the cell counts as done. What goes wrong in a cell is not reported as a
//! failed execution:
//! - a `?` error: the generated `From<T> for EvcxrUserCodeError` prints the error to *stderr*
//!   and the line `EVCXR_ERROR_OCCURRED` to stdout, which evcxr consumes; the cell's
//!   `execute_reply` says `ok` and the next cells run;
//! - a panic: caught by `catch_unwind` around the cell, the message goes to stderr (panic
//!   hook) and `EVCXR_PANIC_NOTIFICATION` to stdout, consumed likewise; again `ok`.
//!
//! The child's stderr is read by another thread of the kernel and is not synchronised with the
//! end of the cell: its last lines can be missing from the saved notebook (they were, for the
//! final cell of several notebooks). So scanning stderr cannot be trusted, and the status of
//! the reply says nothing.
//!
//! # What the guard does
//! In the kernel's child process (where cells run) it puts a relay between the cells and the
//! kernel: file descriptor 1 becomes a pipe read by a thread that copies every line unchanged
//! to the original stdout, and in front of evcxr's two markers writes a line of its own:
//! `WIDTHLAB CELL FAILED: the cell returned an error through `?`` or `WIDTHLAB CELL FAILED:
//! the cell panicked: <message>` (a panic hook keeps the message). Both travel the stdout pipe
//! in order, before `EVCXR_EXECUTION_COMPLETE`, so they are in the cell's output whenever the
//! cell finishes. stderr is left alone (a crash's last words, written just before an abort,
//! must not wait in a relay). A crash of the child (abort, signal) is reported by evcxr itself
//! as an error output, and the death of the kernel fails the runner's execution; neither needs
//! the guard.
//!
//! The guard prints [`GUARD_ACTIVE`] once, and the runner fails a notebook whose first code
//! cell does not show it, so a notebook cannot pass by forgetting the guard. It installs itself
//! once per process (later calls only print the line again). Outside evcxr (a test, a
//! program) it changes nothing visible: lines pass through unchanged and the markers never
//! occur.
use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::sync::Mutex;

use crate::{Error, Result};

/// Starts the line the guard prints for a failed cell.
pub const CELL_FAILED: &str = "WIDTHLAB CELL FAILED:";
/// Printed by [`guard`]; the runner requires it in every notebook's first code cell.
pub const GUARD_ACTIVE: &str = "WIDTHLAB GUARD ACTIVE";

/// evcxr 0.22's stdout line after a cell's `?` error (`evcxr_internal_runtime.rs`).
const EVCXR_ERROR: &[u8] = b"EVCXR_ERROR_OCCURRED";
/// evcxr 0.22's stdout line after a cell's panic (`eval_context.rs`).
const EVCXR_PANIC: &[u8] = b"EVCXR_PANIC_NOTIFICATION";
/// Marks the process as guarded (environment variables are per process, unlike the statics
/// of a crate that evcxr may link into several cells).
const GUARDED_ENV: &str = "WIDTHLAB_NOTEBOOK_GUARD";

/// The message of the last panic, for the relay's line.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Makes every later failing cell print a [`CELL_FAILED`] line to stdout (see the module
/// docs). Call it in the first code cell of a notebook, after the `:dep` lines.
pub fn guard() -> Result<()> {
    if std::env::var_os(GUARDED_ENV).is_none() {
        install()?;
        std::env::set_var(GUARDED_ENV, "1");
    }
    println!("{GUARD_ACTIVE}: a failing cell says so on stdout");
    Ok(())
}

fn install() -> Result<()> {
    let os = |what: &str, e: rustix::io::Errno| Error::io("stdout", std::io::Error::other(format!("notebook guard: {what}: {}", std::io::Error::from(e))));
    std::io::stdout().flush().map_err(|e| Error::io("stdout", e))?;
    // fd 1 is replaced by the write end of a fresh pipe, the original kept (close-on-exec)
    // for the relay; the descriptors are owned, so an error closes what was opened
    let original = rustix::io::fcntl_dupfd_cloexec(std::io::stdout().as_fd(), 3).map_err(|e| os("dup of stdout", e))?;
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| os("pipe", e))?;
    rustix::stdio::dup2_stdout(&write).map_err(|e| os("dup2 onto stdout", e))?;
    drop(write);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut last) = LAST_PANIC.try_lock() {
            *last = Some(info.to_string().replace('\n', " "));
        }
        previous(info);
    }));
    std::thread::Builder::new()
        .name("widthlab-notebook-guard".into())
        .spawn(move || {
            relay(std::io::BufReader::new(std::fs::File::from(read)), std::fs::File::from(original));
        })
        .map_err(|e| Error::io("stdout", e))?;
    Ok(())
}

/// Copies `input` to `output` line by line, with a [`CELL_FAILED`] line in front of evcxr's
/// error and panic markers. Ends when `input` closes (the process exits) or `output` fails.
fn relay(input: impl BufRead, mut output: impl Write) {
    for line in input.split(b'\n') {
        let Ok(mut line) = line else { return };
        let failed = if line == EVCXR_ERROR {
            Some("the cell returned an error through `?` (its message is printed to stderr)".to_string())
        } else if line == EVCXR_PANIC {
            let msg = LAST_PANIC.lock().unwrap_or_else(|p| p.into_inner()).take();
            Some(format!("the cell panicked: {}", msg.unwrap_or_else(|| "(no message)".into())))
        } else {
            None
        };
        let mut out = failed.map_or_else(Vec::new, |f| format!("{CELL_FAILED} {f}\n").into_bytes());
        line.push(b'\n');
        out.extend_from_slice(&line);
        if output.write_all(&out).and_then(|()| output.flush()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_marks_evcxr_errors_and_panics_and_copies_everything_else() {
        let input = b"plain line\nEVCXR_BEGIN_CONTENT text/plain\n42\nEVCXR_END_CONTENT\nEVCXR_ERROR_OCCURRED\nEVCXR_EXECUTION_COMPLETE\n";
        let mut out = vec![];
        relay(&input[..], &mut out);
        let out = String::from_utf8(out).unwrap();
        let want = format!(
            "plain line\nEVCXR_BEGIN_CONTENT text/plain\n42\nEVCXR_END_CONTENT\n{CELL_FAILED} the cell returned an error through `?` (its message is printed to stderr)\nEVCXR_ERROR_OCCURRED\nEVCXR_EXECUTION_COMPLETE\n"
        );
        assert_eq!(out, want);
        *LAST_PANIC.lock().unwrap() = Some("panicked at src/x.rs:1:1: boom".into());
        let mut out = vec![];
        relay(&b"EVCXR_PANIC_NOTIFICATION\nEVCXR_EXECUTION_COMPLETE\n"[..], &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), format!("{CELL_FAILED} the cell panicked: panicked at src/x.rs:1:1: boom\nEVCXR_PANIC_NOTIFICATION\nEVCXR_EXECUTION_COMPLETE\n"));
        // bytes that are not UTF-8 pass through unchanged
        let mut out = vec![];
        relay(&b"\xff\xfe x\n"[..], &mut out);
        assert_eq!(out, b"\xff\xfe x\n");
    }
}
