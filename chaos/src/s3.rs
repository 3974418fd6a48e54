//! A real S3 server on loopback for tests and benchmarks: moto's server
//! (`pip install 'moto[server]'`), started on a free port, killed on drop.
//! [`S3Server::start`] accepts any credentials (moto checks no signatures);
//! [`S3Server::start_with_auth`] checks them: moto's
//! `INITIAL_NO_AUTH_ACTION_COUNT` lets the first few calls through
//! unsigned (they create an IAM user, its access key and the buckets), and
//! every later request must be signed with a key moto's IAM knows.
//!
//! moto 5.2 (server mode) checks a signature against a canonical request
//! built from the *decoded* query string, so every request with a `/` in a
//! query value (any S3 listing with `delimiter=/`, from boto3 as well) is
//! refused with `SignatureDoesNotMatch`. With auth the server is therefore
//! started through [`MOTO_SIGV4_FIX`], which canonicalizes the query string
//! as SigV4 says (each key and value URI-encoded once) before moto compares
//! signatures; keys and secrets are checked as before.

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
    /// With [`S3Server::start_with_auth`]: the only access key id and
    /// secret the server accepts.
    pub credentials: Option<(String, String)>,
}

/// Runs moto's server with the SigV4 canonical query string fixed (see the
/// module docs); arguments as `moto_server`'s.
pub const MOTO_SIGV4_FIX: &str = r#"
import sys, urllib.parse as u
import botocore.auth as a
def canon(self, parts):
    if not parts.query:
        return ''
    kv = []
    for pair in parts.query.split('&'):
        k, _, v = pair.partition('=')
        kv.append((u.quote(u.unquote(k), safe='-_.~'), u.quote(u.unquote(v), safe='-_.~')))
    return '&'.join(f'{k}={v}' for k, v in sorted(kv))
a.SigV4Auth._canonical_query_string_url = canon
from moto.server import main
sys.exit(main(sys.argv[1:]))
"#;

impl S3Server {
    /// Starts `moto_server` on a free port and waits until it answers.
    pub fn start(log: &Path) -> Result<S3Server> {
        Self::spawn(log, None)
    }

    /// Starts `moto_server` checking request signatures, with `buckets`
    /// created: only requests signed with `credentials` (an IAM user's
    /// access key made at start) are served; a wrong key id or secret is
    /// refused (`InvalidAccessKeyId`, `SignatureDoesNotMatch`).
    pub fn start_with_auth(log: &Path, buckets: &[&str]) -> Result<S3Server> {
        // Unsigned calls allowed: the readiness probe, CreateUser,
        // PutUserPolicy, CreateAccessKey and one per bucket (a spare or two
        // is used up below).
        let free_calls = 4 + buckets.len() + 2;
        let mut s = Self::spawn(log, Some(free_calls))?;
        // Requests are routed to IAM by the service in the credential scope;
        // the signature is not checked while unsigned calls are allowed.
        let iam = [
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=x/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00",
            ),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        let call = |action: &str, extra: &str| -> Result<String> {
            let body = format!("Action={action}&UserName=strata&Version=2010-05-08{extra}");
            let (code, text) = s.request_with("POST", "/", &iam, body.as_bytes())?;
            if code != 200 {
                bail!("moto IAM {action}: HTTP {code}: {text}");
            }
            Ok(text)
        };
        call("CreateUser", "")?;
        // Without a policy the user may not read or write objects.
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        let encoded: String = policy
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        call("PutUserPolicy", &format!("&PolicyName=all&PolicyDocument={encoded}"))?;
        let key = call("CreateAccessKey", "")?;
        let field = |name: &str| -> Result<String> {
            let open = format!("<{name}>");
            let start = key.find(&open).with_context(|| format!("no {name} in {key}"))? + open.len();
            let end = key[start..].find('<').with_context(|| format!("no {name} in {key}"))?;
            Ok(key[start..start + end].to_string())
        };
        let creds = (field("AccessKeyId")?, field("SecretAccessKey")?);
        for b in buckets {
            s.create_bucket(b)?;
        }
        // Use up the spare unsigned calls, and check that auth is now enforced.
        let mut enforced = false;
        for _ in 0..5 {
            if s.request("GET", "/", &[])? != 200 {
                enforced = true;
                break;
            }
        }
        if !enforced {
            bail!("moto_server still serves unsigned requests: INITIAL_NO_AUTH_ACTION_COUNT not honoured");
        }
        s.credentials = Some(creds);
        Ok(s)
    }

    fn spawn(log: &Path, free_calls: Option<usize>) -> Result<S3Server> {
        let port = crate::free_port();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut cmd = Command::new("moto_server");
        if let Some(n) = free_calls {
            cmd = Command::new("python3");
            cmd.args(["-c", MOTO_SIGV4_FIX]).env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
        }
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting moto_server (pip install 'moto[server]')")?;
        let s = S3Server { child, endpoint: format!("http://127.0.0.1:{port}"), port, credentials: None };
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.request("GET", "/", &[]).is_err() {
            if Instant::now() > deadline {
                bail!("moto_server did not answer on port {port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(s)
    }

    /// One unsigned HTTP request (moto accepts them unless started with
    /// auth); returns the status code.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<u16> {
        Ok(self.request_with(method, path, &[], body)?.0)
    }

    /// One HTTP request with extra headers; returns the status code and the body.
    fn request_with(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.port,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
        let text = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((code, text))
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
