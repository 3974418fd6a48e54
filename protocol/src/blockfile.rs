//! On-disk block format. A block is two files in its tier directory:
//!
//! - `<id:016x>.blk`: the raw block bytes, nothing else, so the kernel can
//!   serve them directly (FUSE passthrough, sendfile) when that comes;
//! - `<id:016x>.meta`: a little-endian header and one crc32c per chunk
//!   (4 KiB for blocks written now; the header records the size, so blocks
//!   written with 64 KiB chunks by earlier versions still read):
//!
//! ```text
//! "SBLK" | version u8 | 0u8 x3 | block id u64 | length u64 | chunk size u32 | chunks u32 | crc u32 * chunks | crc32c(all before) u32
//! ```
//!
//! Both are written under `.tmp` names and renamed, data first: a block
//! exists once its `.meta` does. Reads verify the chunks they touch and never
//! return bytes that fail their checksum.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::BlockId;

/// Checksum granularity of new blocks: a page, so a 4 KiB random read
/// reads and checksums 4 KiB (with 64 KiB chunks, copying and checksumming
/// the whole chunk was ~40% of a FUSE random read's CPU). The metadata is
/// 1/1024 of the data.
pub const CHUNK_BYTES: u64 = 4 * 1024;
/// Chunk sizes a metadata file may record.
const CHUNK_RANGE: std::ops::RangeInclusive<u64> = 512..=(16 << 20);
const MAGIC: &[u8; 4] = b"SBLK";
const VERSION: u8 = 1;

/// Why a block could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The block is not in this directory.
    #[error("block {block_id:016x} not found")]
    NotFound { block_id: BlockId },
    /// Stored bytes failed their checksum.
    #[error("block {block_id:016x}: checksum mismatch in chunk {chunk}")]
    Checksum { block_id: BlockId, chunk: u64 },
    /// The metadata file is damaged or does not match the data file.
    #[error("block {block_id:016x} is corrupt: {reason}")]
    Corrupt { block_id: BlockId, reason: String },
    /// The requested range is outside the block.
    #[error("range {offset}+{length} is outside block {block_id:016x} of {block_len} bytes")]
    OutOfRange { block_id: BlockId, offset: u64, length: u64, block_len: u64 },
    /// An I/O error.
    #[error("block i/o: {0}")]
    Io(#[from] io::Error),
}

/// A block's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMeta {
    /// The block.
    pub block_id: BlockId,
    /// Its length.
    pub length: u64,
    /// Checksum granularity.
    pub chunk: u64,
    /// crc32c of each chunk.
    pub crcs: Vec<u32>,
}

/// Path of a block's data file.
pub fn data_path(dir: &Path, id: BlockId) -> PathBuf {
    dir.join(format!("{id:016x}.blk"))
}

/// Path of a block's metadata file.
pub fn meta_path(dir: &Path, id: BlockId) -> PathBuf {
    dir.join(format!("{id:016x}.meta"))
}

impl BlockMeta {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(36 + 4 * self.crcs.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&[VERSION, 0, 0, 0]);
        b.extend_from_slice(&self.block_id.to_le_bytes());
        b.extend_from_slice(&self.length.to_le_bytes());
        b.extend_from_slice(&(self.chunk as u32).to_le_bytes());
        b.extend_from_slice(&(self.crcs.len() as u32).to_le_bytes());
        for c in &self.crcs {
            b.extend_from_slice(&c.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(block_id: BlockId, b: &[u8]) -> Result<Self, BlockError> {
        let corrupt = |reason: &str| BlockError::Corrupt { block_id, reason: reason.to_string() };
        if b.len() < 36 {
            return Err(corrupt("metadata file too short"));
        }
        let (body, tail) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(tail.try_into().expect("4 bytes")) {
            return Err(corrupt("metadata checksum mismatch"));
        }
        if &body[0..4] != MAGIC || body[4] != VERSION {
            return Err(corrupt("bad metadata magic or version"));
        }
        let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().expect("4 bytes"));
        let (id, length, chunk, n) = (u64_at(8), u64_at(16), u32_at(24) as u64, u32_at(28) as usize);
        if id != block_id
            || !chunk.is_power_of_two()
            || !CHUNK_RANGE.contains(&chunk)
            || n != length.div_ceil(chunk) as usize
            || body.len() != 32 + 4 * n
        {
            return Err(corrupt("metadata does not describe this block"));
        }
        let crcs = (0..n).map(|i| u32_at(32 + 4 * i)).collect();
        Ok(BlockMeta { block_id, length, chunk, crcs })
    }
}

/// Reads and checks a block's metadata against its data file.
pub fn read_meta(dir: &Path, block_id: BlockId) -> Result<BlockMeta, BlockError> {
    let bytes = match fs::read(meta_path(dir, block_id)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlockError::NotFound { block_id }),
        Err(e) => return Err(e.into()),
    };
    let meta = BlockMeta::decode(block_id, &bytes)?;
    let data_len = match fs::metadata(data_path(dir, block_id)) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(BlockError::Corrupt { block_id, reason: "data file missing".into() })
        }
        Err(e) => return Err(e.into()),
    };
    if data_len != meta.length {
        return Err(BlockError::Corrupt {
            block_id,
            reason: format!("data file has {data_len} bytes, expected {}", meta.length),
        });
    }
    Ok(meta)
}

/// Reads `length` bytes at `offset`, verifying every chunk touched.
pub fn read_range(dir: &Path, meta: &BlockMeta, offset: u64, length: u64) -> Result<Vec<u8>, BlockError> {
    let id = meta.block_id;
    let file = File::open(data_path(dir, id)).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => BlockError::NotFound { block_id: id },
        _ => e.into(),
    })?;
    read_verified(&file, meta, offset, length)
}

/// Reads `length` bytes at `offset` of an open data file, verifying every chunk touched.
fn read_verified(file: &File, meta: &BlockMeta, offset: u64, length: u64) -> Result<Vec<u8>, BlockError> {
    let id = meta.block_id;
    if offset.checked_add(length).is_none_or(|end| end > meta.length) {
        return Err(BlockError::OutOfRange { block_id: id, offset, length, block_len: meta.length });
    }
    if length == 0 {
        return Ok(Vec::new());
    }
    let size = meta.chunk;
    let first = offset / size;
    let last = (offset + length - 1) / size;
    let start = first * size;
    let end = ((last + 1) * size).min(meta.length);
    let mut buf = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    for (i, chunk) in buf.chunks(size as usize).enumerate() {
        let c = first + i as u64;
        if crc32c::crc32c(chunk) != meta.crcs[c as usize] {
            return Err(BlockError::Checksum { block_id: id, chunk: c });
        }
    }
    let skip = (offset - start) as usize;
    if skip > 0 {
        buf.drain(..skip);
    }
    buf.truncate(length as usize);
    Ok(buf)
}

/// A block opened for reading, its metadata checked: what a client on the
/// worker's host reads directly (short-circuit), with the same checksums.
/// Blocks never change once written, and an open file outlives eviction.
/// Every read verifies the chunks it touches, like the worker's: bytes that
/// rotted on disk after an earlier read are caught (a 4 KiB random read
/// costs one 4 KiB chunk and its checksum).
#[derive(Debug)]
pub struct OpenBlock {
    meta: BlockMeta,
    file: File,
}

impl OpenBlock {
    /// Opens block `block_id` in tier directory `dir`.
    pub fn open(dir: &Path, block_id: BlockId) -> Result<Self, BlockError> {
        let meta = read_meta(dir, block_id)?;
        let file = File::open(data_path(dir, block_id))?;
        Ok(OpenBlock { meta, file })
    }

    /// The block's length.
    pub fn len(&self) -> u64 {
        self.meta.length
    }

    /// Whether the block is empty.
    pub fn is_empty(&self) -> bool {
        self.meta.length == 0
    }

    /// Reads `length` bytes at `offset`, verifying every chunk touched.
    pub fn read(&self, offset: u64, length: u64) -> Result<Vec<u8>, BlockError> {
        read_verified(&self.file, &self.meta, offset, length)
    }
}

/// Removes a block's files (metadata first, so a crash leaves no half block).
pub fn remove(dir: &Path, block_id: BlockId) -> io::Result<()> {
    for p in [meta_path(dir, block_id), data_path(dir, block_id)] {
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes a new block under temporary names; [`BlockWriter::finish`] publishes it.
pub struct BlockWriter {
    dir: PathBuf,
    block_id: BlockId,
    file: File,
    written: u64,
    chunk: u64,
    crcs: Vec<u32>,
    chunk_crc: u32,
}

fn tmp(p: PathBuf) -> PathBuf {
    let mut s = p.into_os_string();
    s.push(".tmp");
    PathBuf::from(s)
}

impl BlockWriter {
    /// Starts writing block `block_id` in `dir`.
    pub fn create(dir: &Path, block_id: BlockId) -> io::Result<Self> {
        Self::with_chunk(dir, block_id, CHUNK_BYTES)
    }

    /// Starts writing a block with checksums every `chunk` bytes (a power
    /// of two within the range metadata may record).
    pub fn with_chunk(dir: &Path, block_id: BlockId, chunk: u64) -> io::Result<Self> {
        assert!(chunk.is_power_of_two() && CHUNK_RANGE.contains(&chunk), "bad chunk size {chunk}");
        let file = OpenOptions::new().write(true).create(true).truncate(true).open(tmp(data_path(dir, block_id)))?;
        Ok(BlockWriter { dir: dir.to_path_buf(), block_id, file, written: 0, chunk, crcs: Vec::new(), chunk_crc: 0 })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends bytes.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        while !data.is_empty() {
            let in_chunk = self.written % self.chunk;
            let take = ((self.chunk - in_chunk) as usize).min(data.len());
            self.chunk_crc = crc32c::crc32c_append(self.chunk_crc, &data[..take]);
            self.written += take as u64;
            data = &data[take..];
            if self.written.is_multiple_of(self.chunk) {
                self.crcs.push(self.chunk_crc);
                self.chunk_crc = 0;
            }
        }
        Ok(())
    }

    /// Publishes the block; with `durable`, data and metadata are fsync'd first.
    pub fn finish(mut self, durable: bool) -> io::Result<BlockMeta> {
        if !self.written.is_multiple_of(self.chunk) {
            self.crcs.push(self.chunk_crc);
        }
        if durable {
            self.file.sync_data()?;
        }
        let meta = BlockMeta {
            block_id: self.block_id,
            length: self.written,
            chunk: self.chunk,
            crcs: std::mem::take(&mut self.crcs),
        };
        let mp = meta_path(&self.dir, self.block_id);
        let mut mf = File::create(tmp(mp.clone()))?;
        mf.write_all(&meta.encode())?;
        if durable {
            mf.sync_data()?;
        }
        fs::rename(tmp(data_path(&self.dir, self.block_id)), data_path(&self.dir, self.block_id))?;
        fs::rename(tmp(mp.clone()), mp)?;
        if durable {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(meta)
    }

    /// Drops the partial block.
    pub fn abort(self) {
        let _ = fs::remove_file(tmp(data_path(&self.dir, self.block_id)));
    }
}

/// Lists committed blocks in a directory (and removes leftover `.tmp` files).
pub fn scan(dir: &Path) -> io::Result<Vec<(BlockId, std::time::SystemTime)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        } else if let Some(hex) = name.strip_suffix(".meta") {
            if let Ok(id) = u64::from_str_radix(hex, 16) {
                let mtime = entry.metadata()?.modified().unwrap_or(std::time::UNIX_EPOCH);
                out.push((id, mtime));
            }
        }
    }
    out.sort_by_key(|(_, t)| *t);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_detect_corruption() {
        // Blocks of this version (4 KiB chunks) and of earlier ones (64 KiB).
        for (id, chunk) in [(7, CHUNK_BYTES), (8, 64 * 1024)] {
            let d = tempfile::tempdir().unwrap();
            let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
            let mut w = BlockWriter::with_chunk(d.path(), id, chunk).unwrap();
            w.write(&data[..1000]).unwrap();
            w.write(&data[1000..]).unwrap();
            let meta = w.finish(true).unwrap();
            assert_eq!(meta.chunk, chunk);
            assert_eq!(meta.crcs.len() as u64, 200_000u64.div_ceil(chunk));
            assert_eq!(read_meta(d.path(), id).unwrap(), meta);
            assert_eq!(read_range(d.path(), &meta, 0, data.len() as u64).unwrap(), data);
            assert_eq!(read_range(d.path(), &meta, 70_000, 100).unwrap(), &data[70_000..70_100]);
            assert!(matches!(read_range(d.path(), &meta, 199_999, 2), Err(BlockError::OutOfRange { .. })));
            // Flip one byte: reads touching its chunk fail, others still work.
            let bad = 100_000u64;
            let (bad_chunk, bad_start) = (bad / chunk, bad / chunk * chunk);
            let p = data_path(d.path(), id);
            let mut bytes = fs::read(&p).unwrap();
            bytes[bad as usize] ^= 0x40;
            fs::write(&p, bytes).unwrap();
            let checksum_err = |r: Result<Vec<u8>, BlockError>| matches!(r, Err(BlockError::Checksum { chunk: c, .. }) if c == bad_chunk);
            assert!(checksum_err(read_range(d.path(), &meta, 99_000, 2000)));
            assert_eq!(read_range(d.path(), &meta, 0, 100).unwrap(), &data[..100]);
            let open = OpenBlock::open(d.path(), id).unwrap();
            assert_eq!(open.len(), data.len() as u64);
            assert_eq!(open.read(60_000, 1000).unwrap(), &data[60_000..61_000]);
            assert!(checksum_err(open.read(99_000, 2000)));
            // Reads up to the bad chunk work; any read touching it fails, every time.
            assert_eq!(open.read(10, 20).unwrap(), &data[10..30]);
            let s = bad_start as usize;
            assert_eq!(open.read(bad_start - 536, 536).unwrap(), &data[s - 536..s]);
            assert!(checksum_err(open.read(bad_start - 536, 537)));
            assert!(checksum_err(open.read(bad, 1)));
            assert!(checksum_err(open.read(bad, 1)));
            assert!(matches!(open.read(199_999, 2), Err(BlockError::OutOfRange { .. })));
            assert_eq!(scan(d.path()).unwrap().len(), 1);
            remove(d.path(), id).unwrap();
            assert!(matches!(read_meta(d.path(), id), Err(BlockError::NotFound { .. })));
        }
    }

    #[test]
    fn metadata_with_a_bad_chunk_size_is_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let mut w = BlockWriter::create(d.path(), 9).unwrap();
        w.write(&[1u8; 10_000]).unwrap();
        let meta = w.finish(false).unwrap();
        for chunk in [3000, 0, 1 << 30] {
            let bad = BlockMeta { chunk, crcs: vec![0; 10_000u64.div_ceil(chunk.max(1)) as usize], ..meta.clone() };
            fs::write(meta_path(d.path(), 9), bad.encode()).unwrap();
            assert!(matches!(read_meta(d.path(), 9), Err(BlockError::Corrupt { .. })), "chunk {chunk}");
        }
    }
}
