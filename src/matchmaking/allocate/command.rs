//! `ALLOCATOR=command`: runs `ALLOCATOR_COMMAND` (through `sh -c`) once per match, with
//! the match as JSON on stdin (`{"match_id","queue","players","token"}`, `token` the
//! match's credential for its game server), and reads
//! `{"server_id","host","port"}` from its stdout. `deploy/allocators/podman.sh` does
//! what the original server did.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::{Allocate, Failure, Request, Server};
use crate::config::Allocator;

/// Longest one run of the command may take.
const TIMEOUT: Duration = Duration::from_secs(60);

pub struct Command {
    command: String,
}

impl Command {
    pub fn new(command: &str) -> Command {
        Command { command: command.to_owned() }
    }
}

/// What the command prints.
#[derive(serde::Deserialize)]
struct Allocated {
    server_id: String,
    host: String,
    port: u16,
}

#[async_trait]
impl Allocate for Command {
    fn kind(&self) -> Allocator {
        Allocator::Command
    }

    async fn allocate(&self, request: &Request<'_>) -> Result<Server, Failure> {
        let input = serde_json::json!({
            "match_id": request.match_id, "queue": request.queue, "players": request.players, "token": request.token
        });
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", &self.command])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Failure::Failed(format!("cannot run ALLOCATOR_COMMAND: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let _ = stdin.write_all(input.to_string().as_bytes()).await;
        drop(stdin);
        let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| Failure::Failed(format!("ALLOCATOR_COMMAND did not answer within {} s", TIMEOUT.as_secs())))?
            .map_err(|e| Failure::Failed(format!("ALLOCATOR_COMMAND failed: {e}")))?;
        if !output.status.success() {
            return Err(Failure::Failed(format!("ALLOCATOR_COMMAND exited with {}", output.status)));
        }
        let Allocated { server_id, host, port } = serde_json::from_slice(&output.stdout)
            .map_err(|e| Failure::Failed(format!("ALLOCATOR_COMMAND printed no {{server_id, host, port}}: {e}")))?;
        Ok(Server { host, port, server_id })
    }
}
