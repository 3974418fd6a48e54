//! Writing a file: bytes are buffered into whole blocks; each full block is
//! allocated by the master and streamed to a worker while the next one
//! fills (one block in flight). `close` seals the file at its length.

use std::sync::Arc;

use strata_protocol::messages::{Attr, MasterRequest, MasterResponse, SetAttrs};
use strata_protocol::{BlockId, ErrorCode, ErrorInfo, InodeId, INLINE_MAX_BYTES};
use tokio::task::JoinHandle;

use crate::{Client, ClientError};

/// A file being written. Call [`FileWriter::close`]: a dropped writer leaves
/// an incomplete file that readers refuse.
pub struct FileWriter {
    client: Client,
    /// The file's path (empty for a detached file until `close_into`).
    path: String,
    attr: Attr,
    buf: Vec<u8>,
    length: u64,
    in_flight: Option<JoinHandle<Result<BlockId, ClientError>>>,
    /// Whether a block was sent (else a small file may go inline).
    sent: bool,
    /// The blocks written, in order.
    blocks: Vec<BlockId>,
}

impl FileWriter {
    pub(crate) fn new(client: Client, path: String, attr: Attr) -> Self {
        let cap = attr.block_size.min(64 << 20) as usize;
        FileWriter {
            client,
            path,
            attr,
            buf: Vec::with_capacity(cap),
            length: 0,
            in_flight: None,
            sent: false,
            blocks: Vec::new(),
        }
    }

    /// The file's inode.
    pub fn inode(&self) -> InodeId {
        self.attr.inode
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.length
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Appends bytes.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), ClientError> {
        let bs = self.attr.block_size as usize;
        while !data.is_empty() {
            let take = (bs - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            self.length += take as u64;
            data = &data[take..];
            if self.buf.len() == bs {
                self.send_block().await?;
            }
        }
        Ok(())
    }

    async fn wait_in_flight(&mut self) -> Result<(), ClientError> {
        if let Some(h) = self.in_flight.take() {
            let block =
                h.await.map_err(|e| ClientError::Remote(ErrorInfo::new(ErrorCode::Internal, e.to_string())))??;
            self.blocks.push(block);
        }
        Ok(())
    }

    async fn send_block(&mut self) -> Result<(), ClientError> {
        self.wait_in_flight().await?;
        self.sent = true;
        let cap = self.attr.block_size.min(64 << 20) as usize;
        let data = Arc::new(std::mem::replace(&mut self.buf, Vec::with_capacity(cap)));
        let client = self.client.clone();
        let inode = self.attr.inode;
        let path = self.path.clone();
        self.in_flight = Some(tokio::spawn(async move { write_block(&client, inode, &path, data).await }));
        Ok(())
    }

    /// Writes the last block, then seals this (detached) file and moves its
    /// content into file `to`, named `path`, in one journal entry (see
    /// `SwapContent`); under a mount, `path`'s write type applies. The
    /// file's blocks, which are now `to`'s (as
    /// [`crate::FileBlocks::blocks`] lists them until `to` changes again).
    pub async fn close_into(mut self, to: InodeId, path: &str) -> Result<Vec<BlockId>, ClientError> {
        if !self.buf.is_empty() {
            self.send_block().await?;
        }
        self.wait_in_flight().await?;
        let req =
            MasterRequest::SwapContent { from: self.attr.inode, to, length: Some(self.length), path: path.to_string() };
        match self.client.call(req).await? {
            MasterResponse::Done => Ok(self.blocks),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Writes the last block and seals the file. A small file (at most
    /// `INLINE_MAX_BYTES`, not under a UFS mount) is sealed with its content
    /// kept inline by the master: one call, no worker.
    pub async fn close(mut self) -> Result<Attr, ClientError> {
        if !self.sent && !self.buf.is_empty() && self.length <= INLINE_MAX_BYTES {
            let data = std::mem::take(&mut self.buf);
            match self.client.write_inline(self.attr.inode, &self.path, data.clone(), SetAttrs::default()).await {
                Err(e) if e.code() == ErrorCode::InlineRefused => self.buf = data,
                r => return r,
            }
        }
        if !self.buf.is_empty() {
            self.send_block().await?;
        }
        self.wait_in_flight().await?;
        let req = MasterRequest::Complete { inode: self.attr.inode, length: self.length, path: self.path.clone() };
        match self.client.call(req).await? {
            MasterResponse::Attr(a) => Ok(a),
            other => Err(ClientError::unexpected(other)),
        }
    }
}

/// Allocates the next block and writes it to as many of the offered
/// workers as the master asks for, down a chain (see
/// [`crate::data::DataPool::write_copies`]).
async fn write_block(client: &Client, inode: InodeId, path: &str, data: Arc<Vec<u8>>) -> Result<BlockId, ClientError> {
    let host = client.inner.cfg.client_host.clone();
    let req = MasterRequest::AddBlock { inode, client_host: host, path: path.to_string() };
    let (loc, copies) = match client.call(req).await? {
        MasterResponse::NewBlock { block, copies } => (block, copies),
        other => return Err(ClientError::unexpected(other)),
    };
    client.inner.data.write_copies(&loc.workers, loc.block_id, &data, true, copies).await?;
    Ok(loc.block_id)
}
