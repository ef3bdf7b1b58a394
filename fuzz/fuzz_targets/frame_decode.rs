//! Fuzzes the binary frame decoder: every socket message from a client goes through it, so it
//! must never panic, and it must accept exactly the frames whose offset and payload are whole
//! blocks of the track's format.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use safetake::audio::{AudioFormat, SampleFormat};
use safetake::ingest::frame::{decode, encode, FrameError, HEADER_BYTES};

fuzz_target!(|input: &[u8]| {
    // The first byte picks the track's format; the rest is the socket message.
    let Some((&selector, message)) = input.split_first() else {
        return;
    };
    let block_size = block_size(selector);

    let result = decode(Bytes::copy_from_slice(message), block_size);

    // An independent reading of the message, to hold the decoder's answer against.
    let Some((head, payload)) = message.split_first_chunk::<HEADER_BYTES>() else {
        assert_eq!(
            result,
            Err(FrameError::TooShort),
            "short message of {} bytes",
            message.len()
        );
        return;
    };
    let offset = u64::from_le_bytes(*head);
    let aligned =
        offset.is_multiple_of(block_size) && (payload.len() as u64).is_multiple_of(block_size);
    match result {
        Ok(frame) => {
            assert!(
                aligned,
                "accepted a misaligned frame (block size {block_size})"
            );
            assert_eq!(frame.offset, offset);
            assert_eq!(&frame.payload[..], payload);
            // The encoder the clients use (tests, load generator) builds the same bytes back.
            assert_eq!(encode(frame.offset, &frame.payload), message);
        }
        // Refusing a well-formed frame would drop audio a client sent in good faith.
        Err(error) => assert!(
            !aligned && error == FrameError::Misaligned,
            "refused an aligned frame with {error:?} (block size {block_size})"
        ),
    }
});

/// Every block size a track can have: 1..=8 channels of 2-byte or 4-byte samples, i.e. 2, 4,
/// 6, 8, 10, 12, 14, 16, 20, 24, 28 and 32 bytes. Derived from `AudioFormat` so it follows the
/// server if its formats change.
fn block_size(selector: u8) -> u64 {
    let channels = u16::from(selector % 8) + 1;
    let sample = if selector & 8 == 0 {
        SampleFormat::S16le
    } else {
        SampleFormat::F32le
    };
    AudioFormat::new(48_000, channels, sample)
        .expect("channels are within the contract's range")
        .block_size()
}
