//! A real S3 server on loopback for tests and benchmarks: moto's server
//! (`pip install 'moto[server]'`), started on a free port, killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running S3 server.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    port: u16,
}

impl S3Server {
    /// Starts `moto_server` on a free port and waits until it answers.
    pub fn start(log: &Path) -> Result<S3Server> {
        let port = crate::free_port();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting moto_server (pip install 'moto[server]')")?;
        let s = S3Server { child, endpoint: format!("http://127.0.0.1:{port}"), port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.request("GET", "/", &[]).is_err() {
            if Instant::now() > deadline {
                bail!("moto_server did not answer on port {port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(s)
    }

    /// One unsigned HTTP request (moto accepts them); returns the status code.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )?;
        s.write_all(body)?;
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
        Ok(code)
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let code = self.request("PUT", &format!("/{name}"), &[])?;
        if code != 200 {
            bail!("creating bucket {name}: HTTP {code}");
        }
        Ok(())
    }

    /// Freezes the server (SIGSTOP): requests hang.
    pub fn pause(&self) -> Result<()> {
        crate::signal(self.child.id(), libc::SIGSTOP)
    }

    /// Lets a paused server continue (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        crate::signal(self.child.id(), libc::SIGCONT)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
