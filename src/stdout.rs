//! Writing the CLI's output. A reader that stops early (`mlobs plan -o json | head -1`) closes the
//! pipe; like other Unix tools, mlobs then stops writing quietly instead of panicking in `print!`.
//! (Rust ignores SIGPIPE, so the write returns EPIPE rather than ending the process.)

use std::io::{ErrorKind, Write};

/// Writes `text` to stdout and flushes it. A closed pipe is not an error: the reader has what it
/// wanted. Any other failure (a full disk behind a redirect) is returned.
pub fn write(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
