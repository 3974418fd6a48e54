//! Reading a file: block ranges are fetched from the workers holding them,
//! in chunks of `read_chunk_bytes`; a sequential reader has the next chunk
//! prefetched while it consumes the current one (read-ahead).

use strata_protocol::messages::{BlockLocation, FileBlocks};
use strata_protocol::ufs::UfsSource;
use strata_protocol::{ErrorCode, ErrorInfo};
use tokio::task::JoinHandle;

use crate::{Client, ClientError};

/// A chunk being fetched in the background.
type Fetch = JoinHandle<Result<Vec<u8>, ClientError>>;

/// An open file.
pub struct FileReader {
    client: Client,
    path: String,
    file: FileBlocks,
    pos: u64,
    /// Bytes of the current chunk and the file offset they start at.
    cur: Option<(u64, Vec<u8>)>,
    /// The chunk being prefetched: its offset and the fetch.
    ahead: Option<(u64, Fetch)>,
    /// Where the previous read ended: a read starting there is sequential.
    last_end: u64,
}

/// Chunk size for reads that do not continue the previous one.
const RANDOM_CHUNK_BYTES: u64 = 64 * 1024;

impl FileReader {
    pub(crate) fn new(client: Client, path: String, file: FileBlocks) -> Self {
        FileReader { client, path, file, pos: 0, cur: None, ahead: None, last_end: 0 }
    }

    /// The file as of the open: attributes, blocks, inline content.
    pub fn file(&self) -> &FileBlocks {
        &self.file
    }

    /// The file's attributes as of the open.
    pub fn attr(&self) -> &strata_protocol::messages::Attr {
        &self.file.attr
    }

    /// File length.
    pub fn len(&self) -> u64 {
        self.file.attr.size
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.file.attr.size == 0
    }

    /// Moves the read position.
    pub fn seek(&mut self, pos: u64) {
        self.pos = pos.min(self.len());
    }

    /// The chunk that starts at `off`: up to `max` bytes, never past its block.
    fn chunk_at(&self, off: u64, max: u64) -> Option<(BlockLocation, u64, u64)> {
        let b = self.file.blocks.iter().find(|b| b.offset <= off && off < b.offset + b.length)?;
        let in_block = off - b.offset;
        let len = (b.length - in_block).min(max);
        Some((b.clone(), in_block, len))
    }

    fn spawn_fetch(&self, off: u64) -> Option<(u64, Fetch)> {
        let (block, in_block, len) = self.chunk_at(off, self.client.inner.cfg.read_chunk_bytes)?;
        let client = self.client.clone();
        let path = self.path.clone();
        let ufs = self.file.ufs.clone();
        Some((off, tokio::spawn(async move { fetch(&client, &path, block, in_block, len, ufs.as_ref()).await })))
    }

    /// Reads up to `buf.len()` bytes at the current position; 0 at the end.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        if self.pos >= self.len() || buf.is_empty() {
            return Ok(0);
        }
        if let Some(data) = &self.file.inline {
            // A small file the master keeps inline: it came with the open.
            let start = self.pos.min(data.len() as u64) as usize;
            let n = (data.len() - start).min(buf.len());
            buf[..n].copy_from_slice(&data[start..start + n]);
            self.pos += n as u64;
            self.last_end = self.pos;
            return Ok(n);
        }
        let have = matches!(&self.cur, Some((off, data)) if *off <= self.pos && self.pos < off + data.len() as u64);
        let sequential = self.pos == self.last_end;
        if !have {
            let chunk_start = self.pos;
            // Sequential readers get big chunks and read-ahead; random ones
            // small chunks, or just what they ask for from a local block
            // file (no round trip to amortize).
            let max = if sequential {
                self.client.inner.cfg.read_chunk_bytes
            } else if self.client.local_block(&self.file, chunk_start).is_some() {
                buf.len() as u64
            } else {
                RANDOM_CHUNK_BYTES.max(buf.len() as u64)
            };
            let data = match self.ahead.take() {
                Some((off, h)) if off == chunk_start => {
                    h.await.map_err(|e| ClientError::Remote(ErrorInfo::new(ErrorCode::Internal, e.to_string())))??
                }
                other => {
                    if let Some((_, h)) = other {
                        h.abort();
                    }
                    let (block, in_block, len) = self.chunk_at(chunk_start, max).ok_or_else(|| {
                        ClientError::Remote(ErrorInfo::new(
                            ErrorCode::Internal,
                            format!("no block covers offset {chunk_start}"),
                        ))
                    })?;
                    fetch(&self.client, &self.path, block, in_block, len, self.file.ufs.as_ref()).await?
                }
            };
            let next = chunk_start + data.len() as u64;
            self.cur = Some((chunk_start, data));
            if sequential && next < self.len() {
                self.ahead = self.spawn_fetch(next);
            }
        }
        let (off, data) = self.cur.as_ref().expect("chunk loaded above");
        let start = (self.pos - off) as usize;
        let n = (data.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&data[start..start + n]);
        self.pos += n as u64;
        self.last_end = self.pos;
        Ok(n)
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        if let Some((_, h)) = self.ahead.take() {
            h.abort();
        }
    }
}

/// Fetches a range of a block from its workers (through a worker from the
/// UFS when no worker has it), refreshing locations once if none of the
/// known ones answers.
pub(crate) async fn fetch(
    client: &Client,
    path: &str,
    mut block: BlockLocation,
    offset: u64,
    len: u64,
    ufs: Option<&UfsSource>,
) -> Result<Vec<u8>, ClientError> {
    let mut ufs = ufs.cloned();
    let mut refreshed = false;
    loop {
        let mut last = None;
        for w in &block.workers {
            let r = match (&ufs, block.from_ufs) {
                (Some(src), true) => client.inner.data.read_ufs(w, &block, offset, len, src).await,
                _ if client.is_local(w) => match client.inner.data.read_local(w, block.block_id, offset, len).await {
                    Ok(data) => Ok(data),
                    Err(e) => {
                        tracing::debug!(worker = w.worker_id, error = %e, "short-circuit read failed; reading through the worker");
                        client.inner.data.read_block(w, block.block_id, offset, len).await
                    }
                },
                _ => client.inner.data.read_block(w, block.block_id, offset, len).await,
            };
            match r {
                Ok(data) => return Ok(data),
                // Corruption is reported, never papered over by another copy silently.
                Err(e) if e.code() == ErrorCode::ChecksumMismatch && block.workers.len() == 1 => return Err(e),
                Err(e) => {
                    tracing::debug!(worker = w.worker_id, error = %e, "block read failed");
                    last = Some(e);
                }
            }
        }
        if refreshed {
            return Err(last.unwrap_or_else(|| {
                ClientError::Remote(ErrorInfo::new(
                    ErrorCode::BlockNotFound,
                    format!("block {:016x} of {path} has no live copy", block.block_id),
                ))
            }));
        }
        if let Some(e) = &last {
            if e.code() == ErrorCode::ChecksumMismatch {
                return Err(last.expect("checked"));
            }
        }
        refreshed = true;
        let fresh = client.blocks(path).await?;
        match fresh.blocks.iter().find(|b| b.block_id == block.block_id) {
            Some(b) => block = b.clone(),
            None => block.workers.clear(),
        }
        ufs = fresh.ufs;
    }
}
