//! The frame codec used on every Strata TCP stream (client↔master RPC and
//! client↔worker data streams).
//!
//! ```text
//! 0      4        5      6          8             12            16
//! +------+--------+------+----------+-------------+-------------+----------------+
//! | STRA | version| kind | reserved | payload len | crc32c(pay) | payload (rkyv) |
//! +------+--------+------+----------+-------------+-------------+----------------+
//! ```
//! All integers are little-endian. The payload is an rkyv archive, read into an
//! aligned buffer and validated (bytecheck) before use. A frame whose declared
//! length exceeds the reader's maximum is rejected before anything is
//! allocated. Bulk block bytes never travel inside a frame: a data response
//! frame is followed by raw bytes whose length it declares.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::rancor::BoxedError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{bytecheck::CheckBytes, Archive, Deserialize, Serialize};

/// Magic bytes opening every frame.
pub const MAGIC: [u8; 4] = *b"STRA";
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Size of the fixed frame header.
pub const HEADER_BYTES: usize = 16;
/// Read buffer of a connection carrying small frames (metadata RPCs): a
/// frame's header and body, often the next frame too, in one read.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Default upper bound on a frame payload (metadata frames are small; a
/// listing of a huge directory is paged well below this).
pub const MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;

/// What a frame carries; informational, checked against what a reader expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A request from a client.
    Request = 1,
    /// A response to a request.
    Response = 2,
}

/// A decoded, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame kind.
    pub kind: FrameKind,
    /// Payload length in bytes (already checked against the maximum).
    pub len: u32,
    /// crc32c of the payload.
    pub crc: u32,
}

/// Why a frame was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The first four bytes are not `STRA`.
    #[error("bad frame magic {found:02x?}")]
    BadMagic { found: [u8; 4] },
    /// A version this build does not speak.
    #[error("unsupported protocol version {found} (this build speaks {VERSION})")]
    UnsupportedVersion { found: u8 },
    /// An unknown frame kind byte.
    #[error("unknown frame kind {found}")]
    BadKind { found: u8 },
    /// The declared payload length exceeds the reader's maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: u32, max: u32 },
    /// The payload does not match its checksum.
    #[error("frame checksum mismatch (expected {expected:08x}, got {actual:08x})")]
    Checksum { expected: u32, actual: u32 },
    /// The buffer ended before the frame did.
    #[error("truncated frame: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    /// The payload is not a valid archive of the expected message.
    #[error("invalid message: {reason}")]
    Invalid { reason: String },
    /// Encoding failed (a programming error or an oversized message).
    #[error("cannot encode message: {reason}")]
    Encode { reason: String },
}

/// Bounds a type must meet to be encoded with [`encode`].
pub trait Encode: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, BoxedError>> {}
impl<T> Encode for T where T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, BoxedError>> {}

/// Bounds a type must meet to be decoded with [`decode`].
pub trait Decode: Archive + Sized
where
    Self::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>> + Deserialize<Self, HighDeserializer<BoxedError>>,
{
}
impl<T> Decode for T
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>> + Deserialize<T, HighDeserializer<BoxedError>>,
{
}

/// Serializes a message to rkyv bytes (no frame header).
pub fn encode<T: Encode>(msg: &T) -> Result<AlignedVec, FrameError> {
    rkyv::to_bytes::<BoxedError>(msg).map_err(|e| FrameError::Encode { reason: e.to_string() })
}

/// Validates rkyv bytes and deserializes the message. `bytes` need not be
/// aligned: unaligned input is copied into an aligned buffer first.
pub fn decode<T>(bytes: &[u8]) -> Result<T, FrameError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>> + Deserialize<T, HighDeserializer<BoxedError>>,
{
    let invalid = |e: BoxedError| FrameError::Invalid { reason: e.to_string() };
    if (bytes.as_ptr() as usize).is_multiple_of(16) {
        rkyv::from_bytes::<T, BoxedError>(bytes).map_err(invalid)
    } else {
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<T, BoxedError>(&aligned).map_err(invalid)
    }
}

/// Builds a complete frame (header + payload) for a message.
pub fn encode_frame<T: Encode>(kind: FrameKind, msg: &T) -> Result<Vec<u8>, FrameError> {
    let payload = encode(msg)?;
    if payload.len() > MAX_FRAME_BYTES as usize {
        return Err(FrameError::Encode {
            reason: format!("message of {} bytes exceeds the frame maximum", payload.len()),
        });
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&header_bytes(kind, &payload));
    out.extend_from_slice(&payload);
    Ok(out)
}

fn header_bytes(kind: FrameKind, payload: &[u8]) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[5] = kind as u8;
    h[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    h
}

/// Parses and checks a frame header against a maximum payload size.
pub fn parse_header(h: &[u8; HEADER_BYTES], max_len: u32) -> Result<FrameHeader, FrameError> {
    let magic: [u8; 4] = [h[0], h[1], h[2], h[3]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic { found: magic });
    }
    if h[4] != VERSION {
        return Err(FrameError::UnsupportedVersion { found: h[4] });
    }
    let kind = match h[5] {
        1 => FrameKind::Request,
        2 => FrameKind::Response,
        other => return Err(FrameError::BadKind { found: other }),
    };
    let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    let crc = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    Ok(FrameHeader { kind, len, crc })
}

/// Checks a payload against its header's checksum.
pub fn check_payload(header: &FrameHeader, payload: &[u8]) -> Result<(), FrameError> {
    let actual = crc32c::crc32c(payload);
    if actual != header.crc {
        return Err(FrameError::Checksum { expected: header.crc, actual });
    }
    Ok(())
}

/// Decodes one whole frame from a buffer: header, bounds, checksum, then a
/// validated archive. Returns the message and the number of bytes consumed.
pub fn decode_frame<T>(buf: &[u8], max_len: u32) -> Result<(FrameHeader, T, usize), FrameError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>> + Deserialize<T, HighDeserializer<BoxedError>>,
{
    if buf.len() < HEADER_BYTES {
        return Err(FrameError::Truncated { need: HEADER_BYTES, have: buf.len() });
    }
    let mut h = [0u8; HEADER_BYTES];
    h.copy_from_slice(&buf[..HEADER_BYTES]);
    let header = parse_header(&h, max_len)?;
    let end = HEADER_BYTES + header.len as usize;
    if buf.len() < end {
        return Err(FrameError::Truncated { need: end, have: buf.len() });
    }
    let payload = &buf[HEADER_BYTES..end];
    check_payload(&header, payload)?;
    Ok((header, decode(payload)?, end))
}

#[cfg(feature = "tokio-io")]
mod io {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// An error reading a frame from a stream.
    #[derive(Debug, thiserror::Error)]
    pub enum ReadFrameError {
        /// The stream failed or ended mid-frame.
        #[error("i/o: {0}")]
        Io(#[from] std::io::Error),
        /// The bytes were not a valid frame.
        #[error(transparent)]
        Frame(#[from] FrameError),
    }

    /// Reads one frame and decodes its message. Returns `Ok(None)` on a clean
    /// end of stream before the first header byte. Never allocates more than
    /// `max_len` bytes for the payload.
    pub async fn read_frame<R, T>(r: &mut R, max_len: u32) -> Result<Option<(FrameHeader, T)>, ReadFrameError>
    where
        R: AsyncRead + Unpin,
        T: Archive,
        T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>> + Deserialize<T, HighDeserializer<BoxedError>>,
    {
        let mut h = [0u8; HEADER_BYTES];
        let n = r.read(&mut h[..1]).await?;
        if n == 0 {
            return Ok(None);
        }
        r.read_exact(&mut h[1..]).await?;
        let header = parse_header(&h, max_len)?;
        let mut payload = AlignedVec::<16>::with_capacity(header.len as usize);
        payload.resize(header.len as usize, 0);
        r.read_exact(&mut payload[..]).await?;
        check_payload(&header, &payload)?;
        let msg =
            rkyv::from_bytes::<T, BoxedError>(&payload).map_err(|e| FrameError::Invalid { reason: e.to_string() })?;
        Ok(Some((header, msg)))
    }

    /// Encodes and writes one frame (does not flush).
    pub async fn write_frame<W, T>(w: &mut W, kind: FrameKind, msg: &T) -> Result<(), ReadFrameError>
    where
        W: AsyncWrite + Unpin,
        T: Encode,
    {
        let frame = encode_frame(kind, msg)?;
        w.write_all(&frame).await?;
        Ok(())
    }
}

#[cfg(feature = "tokio-io")]
pub use io::{read_frame, write_frame, ReadFrameError};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{MasterRequest, RequestEnvelope};
    use proptest::prelude::*;

    fn sample() -> RequestEnvelope {
        RequestEnvelope {
            id: 42,
            body: MasterRequest::Mkdir { path: "/a/b".into(), recursive: true, mode: 0o755, uid: 0, gid: 0 },
            stale_ok: false,
            client: 7,
        }
    }

    #[test]
    fn round_trip() {
        let f = encode_frame(FrameKind::Request, &sample()).unwrap();
        let (h, m, used) = decode_frame::<RequestEnvelope>(&f, MAX_FRAME_BYTES).unwrap();
        assert_eq!(h.kind, FrameKind::Request);
        assert_eq!(used, f.len());
        assert_eq!(m, sample());
    }

    #[test]
    fn rejects_oversized_before_allocating() {
        let mut f = encode_frame(FrameKind::Request, &sample()).unwrap();
        f[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_frame::<RequestEnvelope>(&f, MAX_FRAME_BYTES).unwrap_err(),
            FrameError::TooLarge { len: u32::MAX, max: MAX_FRAME_BYTES }
        );
    }

    #[test]
    fn rejects_flipped_payload_bit() {
        let mut f = encode_frame(FrameKind::Request, &sample()).unwrap();
        let last = f.len() - 1;
        f[last] ^= 1;
        assert!(matches!(decode_frame::<RequestEnvelope>(&f, MAX_FRAME_BYTES), Err(FrameError::Checksum { .. })));
    }

    #[test]
    fn rejects_valid_checksum_over_garbage() {
        // A correct header and checksum around bytes that are no archive.
        let garbage = vec![0xffu8; 64];
        let mut f = header_bytes(FrameKind::Request, &garbage).to_vec();
        f.extend_from_slice(&garbage);
        assert!(matches!(decode_frame::<RequestEnvelope>(&f, MAX_FRAME_BYTES), Err(FrameError::Invalid { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random bytes never panic the decoder.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame::<RequestEnvelope>(&bytes, 1024);
        }

        /// Random bytes behind a valid header (right magic, version, length
        /// and checksum) are rejected or decoded, never a panic.
        #[test]
        fn random_payload_with_valid_header(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut f = header_bytes(FrameKind::Request, &payload).to_vec();
            f.extend_from_slice(&payload);
            let _ = decode_frame::<RequestEnvelope>(&f, 1024);
        }

        /// Every strict prefix of a valid frame is an error.
        #[test]
        fn truncated_frames_are_errors(cut in 0usize..1000) {
            let f = encode_frame(FrameKind::Request, &sample()).unwrap();
            let cut = cut % f.len();
            prop_assert!(decode_frame::<RequestEnvelope>(&f[..cut], MAX_FRAME_BYTES).is_err());
        }

        /// A declared length over the maximum is refused whatever follows.
        #[test]
        fn oversized_lengths_are_refused(len in 1025u32.., tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut f = header_bytes(FrameKind::Request, &[]).to_vec();
            f[8..12].copy_from_slice(&len.to_le_bytes());
            f.extend_from_slice(&tail);
            prop_assert_eq!(decode_frame::<RequestEnvelope>(&f, 1024).unwrap_err(), FrameError::TooLarge { len, max: 1024 });
        }
    }
}
