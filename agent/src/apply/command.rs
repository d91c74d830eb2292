//! Running an external command with a deadline, keeping its stderr for the
//! error. Used for `systemctl`, `useradd`, `dpkg-query` and `apt-get`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::error::CommandError;

/// What a successful command printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub stdout: String,
}

/// Runs `command` to completion or kills it after `timeout`. A non-zero exit
/// is an error carrying the command's stderr.
pub(crate) fn run(mut command: Command, timeout: Duration) -> Result<Output, CommandError> {
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| CommandError::Spawn {
        program: program.clone(),
        source,
    })?;
    // Drain both pipes while waiting, so a chatty command cannot block on a
    // full pipe and look like a hang.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::Timeout { program, timeout });
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::Spawn { program, source });
            }
        }
    };
    let joined =
        |h: Option<thread::JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    let stdout = joined(stdout);
    let stderr = joined(stderr);
    if status.success() {
        Ok(Output { stdout })
    } else {
        Err(CommandError::Failed {
            program,
            status: status.to_string(),
            stderr: stderr.trim().to_owned(),
        })
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
