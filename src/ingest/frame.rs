//! The binary frame: 8 bytes little-endian offset, then whole blocks of PCM.

use bytes::Bytes;

pub const HEADER_BYTES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub offset: u64,
    pub payload: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    TooShort,
    Misaligned,
}

impl FrameError {
    pub fn message(self) -> &'static str {
        match self {
            FrameError::TooShort => "a frame needs 8 offset bytes",
            FrameError::Misaligned => {
                "offset and payload must be whole blocks of the track's format"
            }
        }
    }
}

/// Decodes a binary message. Shape is checked before the offset means anything: a frame too
/// short, or whose offset or payload is not a whole number of blocks, never reaches a writer.
pub fn decode(message: Bytes, block_size: u64) -> Result<Frame, FrameError> {
    let header: [u8; HEADER_BYTES] = message
        .get(..HEADER_BYTES)
        .and_then(|head| head.try_into().ok())
        .ok_or(FrameError::TooShort)?;
    let offset = u64::from_le_bytes(header);
    let payload = message.slice(HEADER_BYTES..);
    if !offset.is_multiple_of(block_size) || !(payload.len() as u64).is_multiple_of(block_size) {
        return Err(FrameError::Misaligned);
    }
    Ok(Frame { offset, payload })
}

/// Builds a frame, for clients and tests.
pub fn encode(offset: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_offset_and_payload() {
        let frame = decode(Bytes::from(encode(480, &[1, 2, 3, 4])), 2).unwrap();
        assert_eq!(frame.offset, 480);
        assert_eq!(&frame.payload[..], &[1, 2, 3, 4]);
    }

    #[test]
    fn refuses_short_and_misaligned_frames() {
        assert_eq!(
            decode(Bytes::from_static(&[0; 7]), 2),
            Err(FrameError::TooShort)
        );
        assert_eq!(
            decode(Bytes::from(encode(0, &[1, 2, 3])), 2),
            Err(FrameError::Misaligned)
        );
        assert_eq!(
            decode(Bytes::from(encode(3, &[1, 2])), 2),
            Err(FrameError::Misaligned)
        );
        assert_eq!(
            decode(Bytes::from(encode(u64::MAX - 1, &[])), 2)
                .unwrap()
                .offset,
            u64::MAX - 1
        );
    }
}
